"""keymgmt with Postgres going away and coming back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import services

from keymgmt.app import create_app
from shared.config import Settings
from shared.pg import connect
from tests.conftest import on_postgres

KEYS = "/api/key-management/keys"


async def test_postgres_stopped_gives_503_then_recovers(
    aiohttp_client: Any, settings: Settings, private_postgres: services.Postgres
) -> None:
    client = await aiohttp_client(create_app(on_postgres(settings, private_postgres)))
    created = await client.put(KEYS, json={"name": "a", "key": "sk-outage-1", "tags": ["o"]})
    assert created.status == 200
    key_id = (await created.json())["keyId"]

    await asyncio.to_thread(private_postgres.stop)
    for method, path, body in (
        ("put", KEYS, {"name": "b", "key": "sk-outage-2"}),
        ("get", f"{KEYS}/{key_id}", None),
        ("get", f"{KEYS}?tag=o", None),
        ("patch", f"{KEYS}/{key_id}", {"name": "c"}),
        ("delete", f"{KEYS}/{key_id}", None),
    ):
        started = time.monotonic()
        response = await client.request(method, path, json=body)
        elapsed = time.monotonic() - started
        assert response.status == 503, await response.text()
        problem = await response.json()
        assert problem["type"] == "database_unavailable"
        assert elapsed < 3, f"{method} {path} took {elapsed:.1f}s"
    assert (await client.get("/api/health")).status == 503

    await asyncio.to_thread(private_postgres.start)
    response = await client.get(f"{KEYS}/{key_id}")
    assert response.status == 200
    assert (await response.json())["name"] == "a"
    assert (await client.get("/api/health")).status == 200


async def test_start_waits_for_postgres(
    aiohttp_client: Any, settings: Settings, private_postgres: services.Postgres
) -> None:
    private_postgres.stop()
    starting = asyncio.ensure_future(
        aiohttp_client(create_app(on_postgres(settings, private_postgres)))
    )
    await asyncio.sleep(1.0)
    assert not starting.done()
    await asyncio.to_thread(private_postgres.start)
    client = await asyncio.wait_for(starting, timeout=30)
    response = await client.put(KEYS, json={"name": "late", "key": "sk-late"})
    assert response.status == 200


async def test_a_write_past_its_statement_timeout_is_a_503(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/api/health")).status == 200  # migrated: the table exists
    blocker = await connect(settings.postgres, "test-blocker")
    try:
        async with blocker.transaction():
            # Every write to the keys waits behind this lock, until its statement timeout.
            await blocker.execute("LOCK TABLE keys IN ACCESS EXCLUSIVE MODE")
            response = await client.put(KEYS, json={"name": "slow", "key": "sk-blocked-1"})
        assert response.status == 503, await response.text()
        assert (await response.json())["type"] == "database_unavailable"
    finally:
        await blocker.close()
