"""The usage-event consumer: killed at any point, it loses and duplicates nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.event_streams import GROUP
from keymgmt.events import EventConsumer
from shared.config import Settings
from shared.db import key_spend, usage_events
from shared.limit_keys import EVENT_FIELD, EVENTS_STREAM, SPEND_MARKER
from shared.metrics import Metrics
from shared.redisconn import create_redis


class Died(Exception):
    """Stands in for a consumer process killed at a given step."""


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[redis.Redis]:
    """The run's own Redis database (TEST_REDIS_DB), flushed: no other test's stream in it."""
    connection = create_redis(settings.redis)
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
    async with engine.connect() as connection:
        total = await connection.scalar(
            sa.select(key_spend.c.cost_nano).where(key_spend.c.key_id == key_id)
        )
    assert total == sum(e["cost_nano"] for e in events)  # a batch written again counts once
    pending: Any = await client.xpending(EVENTS_STREAM, GROUP)
    assert pending["pending"] == 0


async def test_malformed_entries_are_skipped_not_retried_forever(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    key_id = str(uuid.uuid4())
    malformed = [
        await client.xadd(EVENTS_STREAM, {"event_id": "not-a-uuid", "junk": "x"}),
        await client.xadd(EVENTS_STREAM, {EVENT_FIELD: b"not json"}),
        await client.xadd(EVENTS_STREAM, event(key_id, 2, event_id="not-a-uuid")),
    ]
    await client.xadd(EVENTS_STREAM, event(key_id, 1))
    reader = consumer(client, engine, "only")
    assert await reader.consume_once() == 4
    assert await reader.consume_once() == 0
    assert len(await rows_for(engine, key_id)) == 1
    async with engine.connect() as connection:  # kept aside, as they came
        query = sa.text("SELECT event FROM usage_events_rejected WHERE entry_id = ANY(:ids)")
        kept = (await connection.execute(query, {"ids": [i.decode() for i in malformed]})).all()
    assert len(kept) == 3
    assert {"not json", '{"event_id":"not-a-uuid","junk":"x"}'} < {row.event for row in kept}


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


async def test_an_event_postgres_refuses_is_kept_aside_and_the_batch_written(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    key_id = str(uuid.uuid4())
    await client.xadd(EVENTS_STREAM, event(key_id, 1))
    overflowing = orjson.loads(event(key_id, 2)[EVENT_FIELD])
    overflowing["prompt_tokens"] = 2**40  # a compatible upstream's usage, past an int32 column
    refused_id = await client.xadd(EVENTS_STREAM, {EVENT_FIELD: orjson.dumps(overflowing)})
    await client.xadd(EVENTS_STREAM, event(key_id, 3))
    reader = consumer(client, engine, "only")
    assert await reader.consume_once() == 3
    assert await reader.consume_once() == 0
    assert sorted(row.request_id for row in await rows_for(engine, key_id)) == ["req-1", "req-3"]
    async with engine.connect() as connection:
        query = sa.text("SELECT * FROM usage_events_rejected WHERE entry_id = :id")
        (parked,) = (await connection.execute(query, {"id": refused_id.decode()})).all()
    assert (str(parked.key_id), parked.cost_nano) == (key_id, 1002)  # its charge still counts
    assert orjson.loads(parked.event)["prompt_tokens"] == 2**40
    assert "int32" in parked.error
    pending: Any = await client.xpending(EVENTS_STREAM, GROUP)
    assert pending["pending"] == 0


async def test_the_stream_stays_short_while_events_keep_flowing(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    await client.set(SPEND_MARKER, "test")
    key_id = str(uuid.uuid4())
    reader = consumer(client, engine, "only")
    lengths = []
    for round_ in range(12):
        for n in range(250):
            await client.xadd(EVENTS_STREAM, event(key_id, round_ * 250 + n))
        while await reader.consume_once():
            pass
        lengths.append(await client.xlen(EVENTS_STREAM))
    assert len(await rows_for(engine, key_id)) == 3000
    # Trimming drops whole stream nodes (100 entries by default): some entries stay behind.
    assert max(lengths) <= 250


async def test_trimming_keeps_every_entry_not_yet_written(
    client: redis.Redis, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.set(SPEND_MARKER, "test")
    key_id = str(uuid.uuid4())
    ids = [await client.xadd(EVENTS_STREAM, event(key_id, n)) for n in range(1500)]
    first = consumer(client, engine, "first")
    monkeypatch.setattr(first, "_write", _die)
    with pytest.raises(Died):  # entries 0-499 read and never written: pending
        await first.consume_once()
    monkeypatch.undo()
    second = EventConsumer(
        client, engine, Metrics().counter("w_total", "w"), name="second", claim_idle_ms=3_600_000
    )
    assert await second.consume_once() == 500  # 500-999 written; 1000-1499 not read yet
    assert await client.xlen(EVENTS_STREAM) == 1500  # nothing below the oldest pending entry
    assert await consumer(client, engine, "first").consume_once() == 500  # its pending ones
    # None pending now: trimmed below the last entry acknowledged, 499, and no further.
    assert await client.xlen(EVENTS_STREAM) < 1500
    kept: Any = await client.xrange(EVENTS_STREAM, min=ids[499])
    assert [entry_id for entry_id, _ in kept] == ids[499:]
    assert await second.consume_once() == 500
    assert len(await rows_for(engine, key_id)) == 1500


async def test_the_stream_is_not_trimmed_while_the_spend_is_not_restored(
    client: redis.Redis, engine: AsyncEngine
) -> None:
    """The restore reads the first entry of the stream: when Redis came back empty."""
    key_id = str(uuid.uuid4())
    for n in range(1000):
        await client.xadd(EVENTS_STREAM, event(key_id, n))
    reader = consumer(client, engine, "only")
    while await reader.consume_once():
        pass
    assert await client.xlen(EVENTS_STREAM) == 1000
