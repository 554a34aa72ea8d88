"""Every change through keymgmt reaches every proxy replica within a second (CONTRACT,
"Propagation"), with the periodic refresh 60 s away: only the change feed can bring it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import openai
import pytest
import services

from proxy import changefeed
from proxy.changefeed import APPLICATION_NAME
from shared.config import Settings
from shared.pg import connect
from tests.conftest import on_postgres
from tests.e2e.conftest import KEYS, Gateway, Start

BOUND = 1.0
SAFETY_NET = 60.0  # IN_MEMORY_DB_UPDATE_INTERVAL: no periodic refresh during a test
MESSAGES: Any = [{"role": "user", "content": "hi"}]


async def chat(client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def until_every_replica(
    gateway: Gateway,
    raw: str,
    refused: type[openai.APIStatusError] | None,
    within: float = BOUND,
) -> list[float]:
    """Seconds until each replica answers as expected (refuses with `refused`, or serves when
    it is None), calling through the OpenAI SDK; fails when one takes longer than `within`."""
    started = time.monotonic()
    deadline = started + within
    taken = []
    for replica in range(len(gateway.proxies)):
        client = gateway.client(raw, replica)
        while True:
            try:
                await chat(client)
                if refused is None:
                    break
            except openai.APIStatusError as error:
                if refused is not None and isinstance(error, refused):
                    break
                if refused is not None or not isinstance(error, openai.AuthenticationError):
                    raise
            assert time.monotonic() < deadline, f"replica {replica} not within {within} s"
            await asyncio.sleep(0.01)
        taken.append(time.monotonic() - started)
    return taken


async def serving_everywhere(gateway: Gateway, raw: str) -> None:
    for replica in range(len(gateway.proxies)):
        await chat(gateway.client(raw, replica))


@pytest.fixture
async def replicas(start_gateway: Start) -> Gateway:
    return await start_gateway(replicas=2, snapshot_interval=SAFETY_NET)


async def test_a_created_key_is_usable_everywhere_within_a_second(replicas: Gateway) -> None:
    raw = f"sk-gw-{uuid.uuid4().hex}"
    response = await replicas.keymgmt.put(KEYS, json={"name": "new", "key": raw})
    assert response.status == 200
    await until_every_replica(replicas, raw, refused=None)


async def test_a_revoked_key_is_refused_everywhere_within_a_second(replicas: Gateway) -> None:
    raw, config = await replicas.create_key()
    await serving_everywhere(replicas, raw)
    response = await replicas.keymgmt.patch(f"{KEYS}/{config['keyId']}", json={"revoked": True})
    assert response.status == 200
    await until_every_replica(replicas, raw, refused=openai.AuthenticationError)


async def test_a_deleted_key_is_refused_everywhere_within_a_second(replicas: Gateway) -> None:
    raw, config = await replicas.create_key()
    await serving_everywhere(replicas, raw)
    response = await replicas.keymgmt.delete(f"{KEYS}/{config['keyId']}")
    assert response.status == 204
    await until_every_replica(replicas, raw, refused=openai.AuthenticationError)


async def test_a_lowered_limit_holds_everywhere_within_a_second(replicas: Gateway) -> None:
    raw, config = await replicas.create_key(rateLimitOverTime=1000, rateLimitUnit="h")
    await serving_everywhere(replicas, raw)  # two calls of the hour spent
    path = f"{KEYS}/{config['keyId']}"
    response = await replicas.keymgmt.patch(path, json={"rateLimitOverTime": 2})
    assert response.status == 200
    await until_every_replica(replicas, raw, refused=openai.RateLimitError)


async def test_metrics_show_the_lag_and_the_snapshot_age(replicas: Gateway) -> None:
    raw, config = await replicas.create_key()
    await replicas.keymgmt.patch(f"{KEYS}/{config['keyId']}", json={"revoked": True})
    await until_every_replica(replicas, raw, refused=openai.AuthenticationError)
    for proxy in replicas.proxies:
        async with replicas.keymgmt.session.get(proxy.make_url("/metrics")) as response:
            text = await response.text()
        values = {
            line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values['gateway_change_lag_seconds_count{kind="key"}'] >= 2
        assert 0 < values['gateway_change_lag_seconds_sum{kind="key"}'] < 2 * BOUND
        assert values["gateway_change_feed_listening"] == 1
        assert 0 <= values["gateway_snapshot_age_seconds"] < SAFETY_NET


async def listeners(settings: Settings) -> list[int]:
    connection = await connect(settings.postgres)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


async def test_a_change_while_the_listeners_are_cut_off_is_applied_on_reconnect(
    start_gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changefeed, "RETRY_FIRST", 1.0)  # a gap long enough to write in
    gateway = await start_gateway(replicas=2, snapshot_interval=SAFETY_NET)
    raw, config = await gateway.create_key()
    await serving_everywhere(gateway, raw)
    killed = await listeners(gateway.settings)
    assert len(killed) == 2
    admin: asyncpg.Connection = await connect(gateway.settings.postgres)
    try:
        for pid in killed:
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()
    response = await gateway.keymgmt.patch(f"{KEYS}/{config['keyId']}", json={"revoked": True})
    assert response.status == 200
    assert await listeners(gateway.settings) == []  # the change fell in the gap

    await until_every_replica(gateway, raw, refused=openai.AuthenticationError, within=3.5)
    assert len(set(await listeners(gateway.settings)) - set(killed)) == 2


async def test_postgres_restarted_the_replicas_reconnect_and_follow_again(
    start_gateway: Start, private_postgres: services.Postgres, settings: Settings
) -> None:
    gateway = await start_gateway(
        replicas=2,
        snapshot_interval=SAFETY_NET,
        postgres=on_postgres(settings, private_postgres).postgres,
    )
    revoked, config = await gateway.create_key()
    await serving_everywhere(gateway, revoked)

    await asyncio.to_thread(private_postgres.stop)
    await asyncio.to_thread(private_postgres.start)
    response = await gateway.keymgmt.patch(f"{KEYS}/{config['keyId']}", json={"revoked": True})
    assert response.status == 200
    await until_every_replica(gateway, revoked, refused=openai.AuthenticationError, within=3)
    raw = f"sk-gw-{uuid.uuid4().hex}"
    response = await gateway.keymgmt.put(KEYS, json={"name": "after", "key": raw})
    assert response.status == 200
    await until_every_replica(gateway, raw, refused=None)
