"""The admin console in a real headless Chromium, against keymgmt and a proxy on real sockets.

Each scenario runs in a thread (Selenium blocks) while the test's event loop serves the gateway.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai

from tests.e2e.browser import Browser, browser
from tests.e2e.conftest import KEYS, Gateway, Start

__all__ = ["browser"]

PASS = "console-pass-" + uuid.uuid4().hex[:8]
ADMIN = {"X-API-KEY": PASS}
DASH = "\N{EN DASH}"  # between the first and last row numbers in a pager


def network_refusals(messages: list[str], *statuses: int) -> bool:
    """Chromium logs every 4xx a page's fetch gets; those the step provoked are expected."""
    return all(any(f"status of {s}" in m for s in statuses) for m in messages)


def assert_clean(page: Browser, where: str) -> None:
    errors = page.errors()
    assert not errors, f"browser errors on {where}: {errors}"


def wait_until(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def chart_pixels(page: Browser) -> str:
    return str(page.script("return document.querySelector('.chart canvas').toDataURL()"))


def sign_in(page: Browser, url: str) -> None:
    page.open(url)
    page.find("form.signin")
    page.fill("input[name=pass]", "not-the-pass")
    page.button("Sign in").click()
    page.wait_text("#signin-error", lambda t: t == "Wrong pass.")
    assert network_refusals(page.errors(), 401)
    page.screenshot("signin")
    page.fill("input[name=pass]", PASS)
    page.button("Sign in").click()
    page.wait_text("main h1", lambda t: t == "Keys")
    stored = page.script("return [sessionStorage.getItem('gateway.pass'), localStorage.length]")
    assert stored == [PASS, 0]
    assert PASS not in page.driver.current_url


def create_key_with_a_mistake(page: Browser, name: str, tag: str) -> str:
    page.button("New key").click()
    page.find("dialog form.key-form")
    page.fill("dialog input[name=name]", name)
    page.button("Generate", "dialog").click()
    raw = page.find("dialog input[name=key]").get_attribute("value")
    assert raw and raw.startswith("sk-gw-")
    page.fill("dialog input[name=tags]", tag)
    page.fill("dialog input[name=costLimitInUsd]", "-1")
    page.fill("dialog input[name=costLimitInUsdOverTime]", "5")
    page.find("dialog select[name=costLimitInUsdUnit] option[value=h]").click()
    page.fill("dialog input[name=rateLimitOverTime]", "100")
    page.find("dialog select[name=rateLimitUnit] option[value=m]").click()
    page.button("Create key", "dialog").click()
    message = page.wait_text("#f-costLimitInUsd-error", bool)
    assert "greater than or equal to 0" in message
    assert page.find("#f-costLimitInUsd").get_attribute("aria-invalid") == "true"
    assert network_refusals(page.errors(), 400)
    page.screenshot("create-key-error")
    page.fill("dialog input[name=costLimitInUsd]", "10")
    page.button("Create key", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    return raw


def scenario(gateway: Gateway, page: Browser) -> None:
    ui = str(gateway.keymgmt.make_url("/ui/"))
    sign_in(page, ui)
    name, tag = f"console-{uuid.uuid4().hex[:6]}", "console-e2e"
    raw = create_key_with_a_mistake(page, name, tag)
    row = page.wait_text("table.keys tbody tr", lambda t: name in t)
    assert "active" in row and tag in row and "$0.00 / $10.00" in row
    assert_clean(page, "keys")

    page.find("table.keys a[href^='#/keys/']").click()
    page.wait_text("main h1", lambda t: t == name)
    page.wait_text("#range-requests", lambda t: t == "0")
    before = chart_pixels(page)

    client = openai.OpenAI(base_url=gateway.base_url(), api_key=raw, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
        )

    def spent() -> bool:
        page.after(page.button("Refresh").click)
        return page.text("#range-requests") == "3"

    wait_until("the calls in the key's charts", spent)
    assert page.text("#range-cost") != "$0.00"
    assert chart_pixels(page) != before
    lifetime = page.find(".gauges meter").get_attribute("value")
    assert lifetime is not None and float(lifetime) > 0
    page.after(page.find("select[name=range] option[value=custom]").click)
    assert page.find("input[name=from]").get_attribute("value")
    page.after(page.button("Apply").click)
    assert "range=custom" in page.driver.current_url
    assert page.text("#range-requests") == "3"  # the range chosen ends now: the calls are in it
    page.after(page.find("select[name=range] option[value='24h']").click)
    assert_clean(page, "key")
    page.screenshot("key")

    page.find("#nav a[href='#/keys']").click()
    page.wait_text("table.keys tbody tr", lambda t: name in t and "$0.00 /" not in t)
    page.screenshot("keys")

    page.find("#nav a[href='#/top-keys']").click()
    # The run's other tests' keys share the database: the most rows, for this key to be among.
    page.after(page.find("select[name=limit] option[value='100']").click)
    top = page.wait(
        lambda: next((r.text for r in page.all("table.top-keys tbody tr") if name in r.text), None)
    )
    assert " 3" in top
    assert_clean(page, "top keys")
    page.screenshot("top-keys")

    page.find("#nav a[href='#/events']").click()
    page.fill("input[name=tag]", tag)
    page.button("Filter").click()
    page.wait(lambda: len(page.all("table.events tbody tr")) == 3)
    assert f"1{DASH}3 of 3" in page.text(".pager")
    assert_clean(page, "events")
    page.screenshot("events")
    page.all("table.events tbody button")[0].click()
    detail = page.wait_text("dialog dl.details", lambda t: "gpt-4o-mini" in t)
    assert "200" in detail and name in detail
    page.screenshot("event")
    page.find("dialog .close").click()

    page.find("table.events tbody a").click()
    page.wait_text("main h1", lambda t: t == name)
    page.button("Revoke").click()
    page.fill("#confirm-reason", "leaked")
    page.button("Revoke", "dialog").click()
    page.wait_text(".details .state", lambda t: t == "revoked")

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_until("the proxy to refuse the revoked key", refused)
    assert_clean(page, "key after revocation")

    # Fifteen idle minutes end the session at the next look.
    page.script("sessionStorage.setItem('gateway.lastActive', Date.now() - 16 * 60 * 1000)")
    page.script("location.hash = '#/top-keys'")
    page.find("form.signin")
    assert page.script("return sessionStorage.getItem('gateway.pass')") is None

    page.fill("input[name=pass]", PASS)
    page.button("Sign in").click()
    page.wait_text("main h1", lambda t: t == "Top keys by spend")  # back where it was
    page.button("Sign out").click()
    page.find("form.signin")
    assert page.script("return sessionStorage.length") == 0
    client.close()


async def test_console_sign_in_create_call_chart_revoke(
    start_gateway: Start, browser: Browser
) -> None:
    gateway = await start_gateway(admin_pass=PASS)
    # Neighbours in the tables: a key without limits that made a call, and a revoked one.
    response = await gateway.keymgmt.put(
        KEYS, json={"name": "batch jobs", "key": "sk-batch-1", "tags": ["batch"]}, headers=ADMIN
    )
    assert response.status == 200
    retired = {"name": "old integration", "key": "sk-old-1", "tags": ["legacy"]}
    old = await (await gateway.keymgmt.put(KEYS, json=retired, headers=ADMIN)).json()
    await gateway.keymgmt.patch(f"{KEYS}/{old['keyId']}", json={"revoked": True}, headers=ADMIN)
    await gateway.wait_for_refresh()
    await gateway.client("sk-batch-1").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "One call"}]
    )
    page = await gateway.keymgmt.get("/ui/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    await asyncio.to_thread(scenario, gateway, browser)
    found = await gateway.keymgmt.post(
        "/api/v2/key-management/keys", json={"tags": ["console-e2e"]}, headers=ADMIN
    )
    (key,) = (await found.json())["keys"]
    assert key["revoked"] is True and key["revokedReason"] == "leaked"


def keyboard_only(page: Browser) -> None:
    """Tab reaches "New key", Enter opens its dialog with focus inside, Escape gives it back."""
    for _ in range(20):
        page.press("TAB")
        if page.focused().text == "New key":
            break
    assert page.focused().text == "New key"
    page.press("ENTER")
    page.find("dialog[open]")
    assert page.script("return document.activeElement.closest('dialog') !== null")
    page.press("ESCAPE")
    page.wait(lambda: not page.all("dialog"))
    assert page.focused().text == "New key"


def open_scenario(gateway: Gateway, page: Browser, tag: str) -> None:
    page.open(str(gateway.keymgmt.make_url("/ui/#/keys")))
    page.wait_text("#mode", lambda t: "ADMIN_PASS unset" in t)
    page.wait(lambda: page.renders() > 0)
    keyboard_only(page)
    page.fill("input[name=searchTag]", tag)
    page.button("Search").click()
    page.wait_text(".pager", lambda t: f"1{DASH}20 of 23" in t)
    page.button("Next").click()
    page.wait_text(".pager", lambda t: f"21{DASH}23 of 23" in t)
    assert len(page.all("table.keys tbody tr")) == 3

    page.fill("input[name=searchName]", "needle")
    page.button("Search").click()
    page.wait_text(".pager", lambda t: f"1{DASH}1 of 1" in t)
    page.button("Edit").click()
    page.fill("dialog input[name=name]", "needle renamed")
    page.button("Save", "dialog").click()
    page.wait_text("table.keys tbody tr", lambda t: "needle renamed" in t)

    page.button("Delete").click()
    page.find("dialog form.confirm")
    page.button("Cancel", "dialog").click()
    assert "needle renamed" in page.text("table.keys tbody tr")
    page.button("Delete").click()
    page.button("Delete", "dialog").click()
    page.wait_text("table.keys tbody tr", lambda t: "No keys match" in t)

    page.fill("input[name=searchName]", "short-lived")
    page.fill("input[name=searchTag]", "")
    page.button("Search").click()
    page.wait_text("table.keys tbody tr", lambda t: "short-lived" in t and "expired" in t)
    assert_clean(page, "keys, open")


async def test_console_open_without_admin_pass_search_paging_edit_delete(
    gateway: Gateway, browser: Browser
) -> None:
    tag = uuid.uuid4().hex[:8]
    for number in range(22):
        await put_key(gateway, name=f"key {number:02}", tags=[tag])
    needle = await put_key(gateway, name="the needle", tags=[tag])
    await put_key(gateway, name="short-lived", ttl="1s")
    await asyncio.to_thread(open_scenario, gateway, browser, tag)
    gone = await gateway.keymgmt.get(f"{KEYS}/{needle['keyId']}")
    assert gone.status == 404


async def put_key(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    body = {"key": f"sk-{uuid.uuid4().hex}", **fields}
    response = await gateway.keymgmt.put(KEYS, json=body)
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]
