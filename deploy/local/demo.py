"""What `make demo` sets up once both services are up: a provider setting for every provider the
fake upstream speaks, each pointing at it, and one key, DEMO_KEY, that may use them all.

Run on every start: the settings are created, or updated to this run's fake upstream (its port
may change between runs), and the key is created, or given this run's setting ids and
un-revoked. Stdlib only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

DEMO_KEY = "demo-key"
DEMO_KEY_NAME = "demo"
DEMO_TAG = "make-demo"
UPSTREAM_SECRET = "sk-demo-not-a-real-key"  # the fake upstream wants a key, any key
AZURE_API_VERSION = "2024-10-21"
OPENAI_COMPATIBLE_NAME = "local"  # called at /api/custom/providers/local/v1
ACCEPT_TIMEOUT = 10.0
POLL_INTERVAL = 0.1


class DemoSetupError(Exception):
    """keymgmt refused a step; the message says which and why."""


def demo_settings(upstream_root: str) -> list[dict[str, Any]]:
    """One setting per provider, as keymgmt takes it; vllm and the local server, like most
    self-hosted ones, need no key."""
    root, v1 = upstream_root, f"{upstream_root}/v1"
    secret = {"apikey": UPSTREAM_SECRET}
    named = {  # provider → (name, setting)
        "openai": ("demo-openai", {**secret, "baseUrl": v1}),
        "anthropic": ("demo-anthropic", {**secret, "baseUrl": root}),
        "azure": ("demo-azure", {**secret, "endpoint": root, "apiVersion": AZURE_API_VERSION}),
        "vllm": ("demo-vllm", {"url": root}),
        "openai_compatible": (OPENAI_COMPATIBLE_NAME, {"baseUrl": v1}),
    }
    return [{"provider": p, "name": n, "setting": s} for p, (n, s) in named.items()]


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


class _Client:
    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url = base_url
        self.headers = {"Content-Type": "application/json", **headers}
        # No proxy handler: an http_proxy in the environment must not intercept localhost.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=self.headers, method=method
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, _parsed(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _parsed(error.read())

    def call(self, method: str, path: str, body: object = None) -> Any:
        status, answer = self.status(method, path, body)
        if status >= 300:
            detail = answer.get("detail") if isinstance(answer, dict) else answer
            raise DemoSetupError(f"{method} {path}: {status} {detail}")
        return answer


def _setting_ids(admin: _Client, upstream_root: str) -> list[str]:
    existing = {s["name"]: s for s in admin.call("GET", "/api/provider-settings")}
    ids = []
    for wanted in demo_settings(upstream_root):
        found = existing.get(wanted["name"])
        if found is None:
            ids.append(admin.call("PUT", "/api/provider-settings", wanted)["id"])
            continue
        if found["provider"] != wanted["provider"]:
            raise DemoSetupError(
                f"a {found['provider']} setting is named {wanted['name']!r}: rename or delete it"
                f" for the demo's {wanted['provider']} setting"
            )
        admin.call("PATCH", f"/api/provider-settings/{found['id']}", {"setting": wanted["setting"]})
        ids.append(found["id"])
    return ids


def _make_key(admin: _Client, setting_ids: list[str]) -> None:
    tagged = admin.call("GET", f"/api/key-management/keys?tag={DEMO_TAG}")
    found = next((key for key in tagged if key["name"] == DEMO_KEY_NAME), None)
    if found is not None:
        path = f"/api/key-management/keys/{found['keyId']}"
        admin.call("PATCH", path, {"settingIds": setting_ids, "revoked": False})
        return
    key = {"name": DEMO_KEY_NAME, "key": DEMO_KEY, "tags": [DEMO_TAG], "settingIds": setting_ids}
    admin.call("PUT", "/api/key-management/keys", key)


def wait_accepted(proxy_url: str) -> None:
    """Until the proxy knows the key: a setting name that no key has answers 403 then (401
    before), with no call upstream and no usage event."""
    proxy = _Client(proxy_url, {"Authorization": f"Bearer {DEMO_KEY}"})
    deadline = time.monotonic() + ACCEPT_TIMEOUT
    while proxy.status("GET", "/api/custom/providers/-no-such-setting-/v1/models")[0] == 401:
        if time.monotonic() > deadline:
            raise DemoSetupError(f"the proxy did not accept {DEMO_KEY} in {ACCEPT_TIMEOUT:.0f} s")
        time.sleep(POLL_INTERVAL)


def provision(keymgmt_url: str, upstream_root: str, admin_pass: str) -> None:
    """The demo's settings, pointing at `upstream_root`, and its key, which may use them."""
    admin = _Client(keymgmt_url, {"X-API-KEY": admin_pass} if admin_pass else {})
    _make_key(admin, _setting_ids(admin, upstream_root))
