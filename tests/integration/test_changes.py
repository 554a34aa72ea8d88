"""keymgmt announces every committed key write on the change feed, and nothing else."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.errors import InvalidInput, KeyExists, KeyNotFound
from keymgmt.store import KeyStore
from shared.changes import CHANNEL, KEY, Change, parse_change
from shared.config import Settings
from shared.pg import connect


@pytest.fixture
async def received(settings: Settings) -> AsyncIterator[asyncio.Queue[str]]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    connection = await connect(settings.postgres)
    await connection.add_listener(CHANNEL, lambda *args: queue.put_nowait(args[-1]))
    yield queue
    await connection.close()


async def next_change(queue: asyncio.Queue[str]) -> Change:
    payload = await asyncio.wait_for(queue.get(), 5)
    assert len(payload.encode()) < 200
    change = parse_change(payload)
    assert change is not None, payload
    return change


async def test_create_update_and_delete_are_announced_with_their_version(
    engine: AsyncEngine, settings: Settings, received: asyncio.Queue[str]
) -> None:
    store = KeyStore(engine, settings.postgres)
    before = time.time()
    created = await store.create({"name": "n", "key": f"sk-{uuid.uuid4().hex}"})
    change = await next_change(received)
    assert (change.kind, change.object_id) == (KEY, created.key_id)
    assert change.version == pytest.approx(created.updated_at, abs=1e-6)
    assert before - 1 < change.committed_at < time.time() + 1

    updated = await store.update(created.key_id, {"revoked": True})
    change = await next_change(received)
    assert change.object_id == created.key_id
    assert change.version == pytest.approx(updated.updated_at, abs=1e-6)
    assert change.version >= created.updated_at

    await store.delete(created.key_id)
    change = await next_change(received)
    assert change.object_id == created.key_id
    assert change.version >= updated.updated_at


async def test_writes_that_fail_announce_nothing(
    engine: AsyncEngine, settings: Settings, received: asyncio.Queue[str]
) -> None:
    store = KeyStore(engine, settings.postgres)
    raw = f"sk-{uuid.uuid4().hex}"
    created = await store.create({"name": "n", "key": raw})
    await next_change(received)
    with pytest.raises(KeyExists):
        await store.create({"name": "again", "key": raw})
    with pytest.raises(InvalidInput):
        await store.update(created.key_id, {"rateLimitOverTime": 5})  # a limit without its unit
    with pytest.raises(KeyNotFound):
        await store.delete(str(uuid.uuid4()))
    await asyncio.sleep(0.3)
    assert received.empty()


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '{"kind": "key", "id": "x", "version": 1}',
        '{"kind": "", "id": "x", "version": 1, "at": 2}',
        '{"kind": "key", "id": 7, "version": 1, "at": 2}',
        '{"kind": "key", "id": "x", "version": "1", "at": 2}',
        '{"kind": "key", "id": "x", "version": true, "at": 2}',
    ],
)
def test_foreign_payloads_are_not_changes(payload: str) -> None:
    assert parse_change(payload) is None


def test_a_payload_is_parsed() -> None:
    payload = '{"kind": "key", "id": "k1", "version": 1.5, "at": 2}'
    assert parse_change(payload) == Change("key", "k1", 1.5, 2)
