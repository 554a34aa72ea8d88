"""The usage-event consumer: killed at any point, it loses and duplicates nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.events import GROUP, EventConsumer
from shared.config import Settings
from shared.db import usage_events
from shared.limits import EVENT_FIELD, EVENTS_STREAM
from shared.metrics import Metrics
from shared.redisconn import create_redis

ISOLATED_DB = 12  # the stream is flushed here; other tests' proxies write to their own db


class Died(Exception):
    """Stands in for a consumer process killed at a given step."""


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[redis.Redis]:
    connection = create_redis(replace(settings.redis, db=ISOLATED_DB))
    await connection.flushdb()
    yield connection
    await connection.flushdb()
    await connection.aclose()


def event(key_id: str, n: int, event_id: str = "") -> dict[str, bytes]:
    """A stream entry as the settle script appends it."""
    return {
        EVENT_FIELD: orjson.dumps({
            "event_id": event_id or uuid.uuid4().hex, "request_id": f"req-{n}", "key_id": key_id,
            "model": "m", "path": "chat/completions", "status": 200, "prompt_tokens": 6,
            "completion_tokens": 5, "cached_tokens": 0, "cost_nano": 1000 + n,
            "latency_ms": 12.5, "upstream_ms": 11.0, "streamed": False, "time": time.time(),
        })
    }  # fmt: skip


async def rows_for(engine: AsyncEngine, key_id: str) -> list[Any]:
    async with engine.connect() as connection:
        query = usage_events.select().where(usage_events.c.key_id == key_id)
        return list((await connection.execute(query)).all())


def consumer(client: redis.Redis, engine: AsyncEngine, name: str) -> EventConsumer:
    written = Metrics().counter("written_total", "events written")
    return EventConsumer(client, engine, written, name=name, claim_idle_ms=0)


@pytest.mark.parametrize("dies", ["before commit", "after commit, before ack"])
async def test_a_consumer_killed_mid_batch_loses_and_duplicates_nothing(
    client: redis.Redis, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    key_id = str(uuid.uuid4())
    sent = [event(key_id, n) for n in range(120)]
    for fields in sent:
        await client.xadd(EVENTS_STREAM, fields)

    first = consumer(client, engine, "first")
    if dies == "before commit":
        monkeypatch.setattr(first, "_write", _die)
    else:
        monkeypatch.setattr(client, "xack", _die)
    with pytest.raises(Died):
        await first.consume_once()
    monkeypatch.undo()

    second = consumer(client, engine, "second")
    while await second.consume_once():
        pass
    rows = await rows_for(engine, key_id)
    events = [orjson.loads(entry[EVENT_FIELD]) for entry in sent]
    assert sorted(r.request_id for r in rows) == sorted(e["request_id"] for e in events)
    assert sum(r.cost_nano for r in rows) == sum(e["cost_nano"] for e in events)
    pending: Any = await client.xpending(EVENTS_STREAM, GROUP)
    assert pending["pending"] == 0


async def test_malformed_entries_are_skipped_not_retried_forever(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    key_id = str(uuid.uuid4())
    await client.xadd(EVENTS_STREAM, {"event_id": "not-a-uuid", "junk": "x"})
    await client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"not json"})
    await client.xadd(EVENTS_STREAM, event(key_id, 2, event_id="not-a-uuid"))
    await client.xadd(EVENTS_STREAM, event(key_id, 1))
    reader = consumer(client, engine, "only")
    assert await reader.consume_once() == 4
    assert await reader.consume_once() == 0
    assert len(await rows_for(engine, key_id)) == 1


async def test_entries_in_the_older_field_per_value_format_are_recorded(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    key_id = str(uuid.uuid4())
    fields = {
        "event_id": uuid.uuid4().hex, "request_id": "req-old", "key_id": key_id, "model": "m",
        "path": "chat/completions", "status": "200", "prompt_tokens": "6", "completion_tokens": "5",
        "cached_tokens": "0", "cost_nano": "1234", "latency_ms": "12.5", "upstream_ms": "11.0",
        "streamed": "1", "time": f"{time.time():.6f}",
    }  # fmt: skip
    await client.xadd(EVENTS_STREAM, fields)
    assert await consumer(client, engine, "c").consume_once() == 1
    (row,) = await rows_for(engine, key_id)
    assert (row.request_id, row.status, row.cost_nano, row.streamed) == ("req-old", 200, 1234, True)


async def _die(*_: Any, **__: Any) -> None:
    raise Died


async def test_event_rows_keep_their_numbers(client: redis.Redis, engine: AsyncEngine) -> None:
    key_id = str(uuid.uuid4())
    event_id = uuid.uuid4().hex
    await client.xadd(EVENTS_STREAM, event(key_id, 7, event_id))
    await consumer(client, engine, "c").consume_once()
    (row,) = await rows_for(engine, key_id)
    assert (
        row.request_id,
        row.status,
        row.prompt_tokens,
        row.completion_tokens,
        row.cost_nano,
    ) == ("req-7", 200, 6, 5, 1007)
    assert row.latency_ms == 12.5
    async with engine.connect() as connection:
        total = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(usage_events)
            .where(usage_events.c.event_id == str(uuid.UUID(event_id)))
        )
    assert total == 1
