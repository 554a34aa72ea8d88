"""Provider settings through the whole gateway: keymgmt's API to every proxy replica within a
second, the secret opened there and nowhere else in clear (responses, log lines)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import pytest

from proxy.typedefs import PROVIDER_SETTINGS, SNAPSHOT
from shared.models import hash_key
from tests.e2e.conftest import KEYS, Gateway, Start
from tests.integration.test_provider_settings_api import every_log_field

SETTINGS = "/api/provider-settings"
BOUND = 1.0
SAFETY_NET = 60.0  # IN_MEMORY_DB_UPDATE_INTERVAL: only the change feed can be this fast


async def on_every_replica(gateway: Gateway, holds: Callable[..., bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not all(holds(proxy.app) for proxy in gateway.proxies):
        assert time.monotonic() < deadline, f"not on every replica within {BOUND} s: {what}"
        await asyncio.sleep(0.005)


async def test_settings_reach_every_replica_within_a_second_and_stay_secret(
    start_gateway: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await start_gateway(replicas=2, snapshot_interval=SAFETY_NET)
    clear, rotated = f"sk-e2e-{uuid.uuid4().hex}", f"sk-e2e-{uuid.uuid4().hex}"
    body = {"provider": "openai", "name": f"e2e-{uuid.uuid4().hex[:8]}",
            "setting": {"apikey": clear, "baseUrl": "https://a.example/v1"}}  # fmt: skip
    response = await gateway.keymgmt.put(SETTINGS, json=body)
    created = await response.json()
    assert response.status == 200 and clear not in await response.text()
    setting_id = created["id"]

    def secret_is(value: str) -> Callable[..., bool]:
        def holds(app: object) -> bool:
            held = app[PROVIDER_SETTINGS].by_id(setting_id)  # type: ignore[index]
            return held is not None and held.secret == value

        return holds

    await on_every_replica(gateway, secret_is(clear), "created")
    raw = f"sk-gw-{uuid.uuid4().hex}"
    response = await gateway.keymgmt.put(
        KEYS, json={"name": "k", "key": raw, "settingId": setting_id, "rotationEnabled": True}
    )
    key = await response.json()
    assert response.status == 200, key
    await on_every_replica(
        gateway,
        lambda app: getattr(app[SNAPSHOT].get(hash_key(raw)), "setting_ids", ()) == (setting_id,),
        "the key's setting",
    )
    patch = {"setting": {"apikey": rotated, "baseUrl": None}}
    response = await gateway.keymgmt.patch(f"{SETTINGS}/{setting_id}", json=patch)
    assert response.status == 200 and rotated not in await response.text()
    await on_every_replica(gateway, secret_is(rotated), "changed")
    held = gateway.proxies[0].app[PROVIDER_SETTINGS].by_id(setting_id)
    assert held is not None and held.options == {}

    assert (await gateway.keymgmt.delete(f"{SETTINGS}/{setting_id}")).status == 409
    assert (await gateway.keymgmt.delete(f"{KEYS}/{key['keyId']}")).status == 204
    assert (await gateway.keymgmt.delete(f"{SETTINGS}/{setting_id}")).status == 204
    await on_every_replica(
        gateway, lambda app: app[PROVIDER_SETTINGS].by_id(setting_id) is None, "deleted"
    )
    logged = every_log_field(caplog)
    for secret in (clear, rotated):
        assert secret not in logged
