"""Spend restored into a Redis that came back empty: from per-key totals, marker last."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.app import SPEND_CHECK_INTERVAL
from keymgmt.app import create_app as create_keymgmt
from keymgmt.events import EventConsumer
from keymgmt.spend import rebuild_all_spend, restore_lost_spend
from shared.admissions import LimitsNotReady
from shared.config import PostgresSettings, Settings
from shared.db import keys, usage_events
from shared.db_engine import create_engine, migrate
from shared.limit_keys import EVENT_FIELD, EVENTS_STREAM, SPEND_MARKER, KeyNames, spend_key
from shared.limits import LimitEngine
from shared.metrics import Metrics
from shared.models import Key
from shared.redispipe import RedisPipe
from tests.conftest import Endpoint

BIG_TABLE_ROWS = 2_100_000  # a multiple of len(BIG_KEYS)
BIG_KEYS = [str(uuid.uuid4()) for _ in range(3)]
BIG_COST = 7  # nano-USD per generated event
# Far below what a scan of the generated events takes, far above what reading a few keys does.
SHORT_TIMEOUT = 0.2


def connect(settings: PostgresSettings) -> Any:
    """A plain connection without keymgmt's statement timeout."""
    return asyncpg.connect(
        host=settings.hosts[0],
        port=settings.port,
        user=settings.username,
        password=settings.password or None,
        database=settings.db_name,
    )


@asynccontextmanager
async def usage_events_locked(settings: PostgresSettings) -> AsyncIterator[None]:
    """usage_events locked by another connection for as long as the block runs."""
    blocker = await connect(settings)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await blocker.close()


@pytest.fixture(scope="module")
def big_table(module_postgres: PostgresSettings) -> Iterator[None]:
    """Millions of old events for BIG_KEYS, written as the consumer writes them."""

    async def fill() -> None:
        engine = create_engine(module_postgres)
        await migrate(engine)
        await engine.dispose()
        connection = await connect(module_postgres)
        try:
            await connection.execute(
                """INSERT INTO usage_events SELECT lpad(to_hex(i), 32, '0')::uuid, 'r',
                ($1::uuid[])[1 + i % 3], 'm', 'chat/completions', 200, 1, 1, 0, $2, 1, 1, false,
                now() - interval '30 days', now() - interval '30 days'
                FROM generate_series(1, $3::int) AS i""",
                BIG_KEYS,
                BIG_COST,
                BIG_TABLE_ROWS,
                timeout=600,
            )
            await connection.execute("ANALYZE usage_events", timeout=600)
        finally:
            await connection.close()

    asyncio.run(fill())
    yield


@pytest.fixture(scope="module")
def module_postgres(postgres_endpoint: Endpoint, database_name: str) -> PostgresSettings:
    return PostgresSettings(
        hosts=(postgres_endpoint.host,),
        port=postgres_endpoint.port,
        username=os.environ.get("POSTGRESQL_USERNAME", "postgres"),
        password=os.environ.get("POSTGRESQL_PASSWORD", ""),
        db_name=database_name,
    )


@pytest.fixture
async def empty_redis(redis_client: redis.Redis) -> AsyncIterator[redis.Redis]:
    """The test's Redis database, as a restarted Redis without its data finds it."""
    await redis_client.flushdb()
    yield redis_client
    await redis_client.flushdb()


@pytest.fixture
async def short_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """keymgmt's engine with a statement timeout a full scan of the big table cannot meet."""
    engine = create_engine(replace(settings.postgres, read_timeout=SHORT_TIMEOUT))
    yield engine
    await engine.dispose()


async def add_key(engine: AsyncEngine, **limits: Any) -> Key:
    key = Key(
        key_id=str(uuid.uuid4()), name="k", key_hash=uuid.uuid4().hex, created_at=0, updated_at=0
    )
    key = replace(key, **limits)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            keys.insert().values(
                key_id=key.key_id,
                key_hash=key.key_hash,
                name=key.name,
                created_at=now,
                updated_at=now,
                **limits,
            )
        )
    return key


async def record(engine: AsyncEngine, key_id: str, cost_nano: int, recorded_at: datetime) -> None:
    """One usage event as the consumer writes it."""
    async with engine.begin() as connection:
        await connection.execute(
            usage_events.insert().values(
                event_id=str(uuid.uuid4()), request_id="r", key_id=key_id, model="m",
                path="chat/completions", status=200, prompt_tokens=1, completion_tokens=1,
                cached_tokens=0, cost_nano=cost_nano, latency_ms=1.0, upstream_ms=1.0,
                streamed=False, created_at=recorded_at, recorded_at=recorded_at,
            )
        )  # fmt: skip


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def spend_of(client: redis.Redis, key_id: str) -> int:
    return int(await client.get(spend_key(key_id)) or 0)


async def test_the_big_table_cannot_be_scanned_within_the_timeout(
    big_table: None, short_engine: AsyncEngine
) -> None:
    """The premise of the tests below: summing the events themselves times out."""
    query = sa.select(usage_events.c.key_id, sa.func.sum(usage_events.c.cost_nano)).group_by(
        usage_events.c.key_id
    )
    with pytest.raises(TimeoutError):
        async with short_engine.connect() as connection:
            # One process scans, as on a busy server: parallel workers of an idle one may just
            # make it, which would prove nothing either way.
            await connection.execute(sa.text("SET max_parallel_workers_per_gather = 0"))
            await connection.execute(query)


async def test_lifetime_spend_is_restored_past_millions_of_events(
    big_table: None, short_engine: AsyncEngine, empty_redis: redis.Redis
) -> None:
    assert await restore_lost_spend(short_engine, empty_redis)
    expected = BIG_TABLE_ROWS // 3 * BIG_COST
    assert [await spend_of(empty_redis, key_id) for key_id in BIG_KEYS] == [expected] * 3
    assert await empty_redis.exists(SPEND_MARKER)
    assert not await restore_lost_spend(short_engine, empty_redis)  # once only
    assert await spend_of(empty_redis, BIG_KEYS[0]) == expected


async def test_rebuild_sets_spend_from_the_totals_past_millions_of_events(
    big_table: None, short_engine: AsyncEngine, empty_redis: redis.Redis
) -> None:
    await empty_redis.set(spend_key(BIG_KEYS[1]), 12345)
    assert await rebuild_all_spend(short_engine, empty_redis) >= 3
    expected = BIG_TABLE_ROWS // 3 * BIG_COST
    assert [await spend_of(empty_redis, key_id) for key_id in BIG_KEYS] == [expected] * 3
    assert await empty_redis.exists(SPEND_MARKER)


async def test_no_admission_trusts_the_counters_before_the_spend_is_back(
    engine: AsyncEngine, empty_redis: redis.Redis, pipe: RedisPipe, settings: Settings
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 600_000_000, ago(60))
    limits = LimitEngine(pipe, reservation_lifetime=60)
    async with usage_events_locked(settings.postgres):
        restoring = asyncio.create_task(restore_lost_spend(engine, empty_redis))
        await asyncio.sleep(0.4)  # the restore is under way, waiting on Postgres
        assert not restoring.done()
        with pytest.raises(LimitsNotReady):
            await limits.admit(key, 100_000_000)
    assert await restoring
    admission = await limits.admit(key, 100_000_000)
    assert admission.admitted
    assert admission.lifetime_committed == 700_000_000  # the restored 0.6 USD and this call's 0.1


async def test_a_failed_restore_is_tried_again(
    engine: AsyncEngine, short_engine: AsyncEngine, empty_redis: redis.Redis, settings: Settings
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 250, ago(60))
    async with usage_events_locked(settings.postgres):
        with pytest.raises(TimeoutError):  # the statement timeout
            await restore_lost_spend(short_engine, empty_redis)
    assert not await empty_redis.exists(SPEND_MARKER)
    assert await restore_lost_spend(short_engine, empty_redis)
    assert await spend_of(empty_redis, key.key_id) == 250


async def test_charges_the_new_redis_holds_are_not_added_twice(
    engine: AsyncEngine, empty_redis: redis.Redis
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 1000, ago(120))  # charged into the Redis that was lost
    # After the restart: the first call's event enters the new stream with its charge.
    seconds, micros = await empty_redis.time()
    first_ms = seconds * 1000 + micros // 1000
    await empty_redis.xadd(EVENTS_STREAM, {"event": b"{}"}, id=f"{first_ms}-0")
    await empty_redis.incrby(spend_key(key.key_id), 30)
    await record(engine, key.key_id, 30, datetime.fromtimestamp(first_ms / 1000, UTC))
    assert await restore_lost_spend(engine, empty_redis)
    assert await spend_of(empty_redis, key.key_id) == 1030


async def test_the_current_windows_are_rebuilt_from_the_last_window_of_events(
    engine: AsyncEngine, empty_redis: redis.Redis, pipe: RedisPipe
) -> None:
    key = await add_key(
        engine,
        cost_limit_in_usd_over_time=1.0,
        cost_limit_in_usd_unit="h",
        rate_limit_over_time=100,
        rate_limit_unit="h",
    )
    await record(engine, key.key_id, 5000, ago(2 * 3600))  # outside the hour
    for seconds in (1800, 900, 10):
        await record(engine, key.key_id, 100, ago(seconds))
    assert await restore_lost_spend(engine, empty_redis)
    usage = await LimitEngine(pipe, reservation_lifetime=60).usage(key)
    assert round(usage.cost_usd * 1e9) == 5300
    assert round(usage.cost_usd_in_window * 1e9) == 300
    assert usage.requests_in_window == 3
    names = KeyNames.of(key)
    assert 0 < await empty_redis.pttl(names.window_spend) <= 3600 * 1000 + 60_000
    assert 0 < await empty_redis.pttl(names.rate) <= 3600 * 1000 + 60_000


async def test_a_restore_waits_for_one_under_way_elsewhere(
    engine: AsyncEngine, empty_redis: redis.Redis
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 40, ago(60))
    results = await asyncio.gather(*(restore_lost_spend(engine, empty_redis) for _ in range(4)))
    assert sum(results) == 1
    assert await spend_of(empty_redis, key.key_id) == 40
    assert not await restore_lost_spend(engine, empty_redis)


async def test_events_being_written_when_redis_is_lost_are_restored(
    engine: AsyncEngine, empty_redis: redis.Redis, settings: Settings
) -> None:
    """A batch read from the Redis that was lost, committed while the restore begins."""
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 10, ago(60))
    fields = {
        EVENT_FIELD: orjson.dumps({
            "event_id": uuid.uuid4().hex, "request_id": "r", "key_id": key.key_id, "model": "m",
            "path": "chat/completions", "status": 200, "prompt_tokens": 1, "completion_tokens": 1,
            "cached_tokens": 0, "cost_nano": 900, "latency_ms": 1.0, "upstream_ms": 1.0,
            "streamed": False, "time": time.time(),
        })
    }  # fmt: skip
    await empty_redis.xadd(EVENTS_STREAM, fields)
    written = Metrics().counter("written_total", "events written")
    consumer = EventConsumer(empty_redis, engine, written, name="c", claim_idle_ms=0)
    blocker = await connect(settings.postgres)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        # Holds the consumer's insert mid-transaction: its trigger waits on the key's total.
        await blocker.execute("SELECT * FROM key_spend WHERE key_id = $1 FOR UPDATE", key.key_id)
        consuming = asyncio.create_task(consumer.consume_once())
        await asyncio.sleep(0.3)
        await empty_redis.flushdb()  # Redis restarts empty, the batch not yet committed
        restoring = asyncio.create_task(restore_lost_spend(engine, empty_redis))
        await asyncio.sleep(0.3)
        await transaction.rollback()
        assert await restoring
    finally:
        await blocker.close()
    assert await consuming == 1
    assert await spend_of(empty_redis, key.key_id) == 910


async def test_every_try_of_a_restore_keeps_the_cutoff_of_the_first(
    engine: AsyncEngine, short_engine: AsyncEngine, empty_redis: redis.Redis, settings: Settings
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 1000, ago(120))  # charged into the Redis that was lost
    seconds, micros = await empty_redis.time()
    first_ms = seconds * 1000 + micros // 1000
    first_id = await empty_redis.xadd(EVENTS_STREAM, {"event": b"{}"}, id=f"{first_ms}-0")
    await empty_redis.incrby(spend_key(key.key_id), 30)
    await record(engine, key.key_id, 30, datetime.fromtimestamp(first_ms / 1000, UTC))
    async with usage_events_locked(settings.postgres):
        with pytest.raises(TimeoutError):
            await restore_lost_spend(short_engine, empty_redis)
    # Meanwhile the stream's head is trimmed away (its length cap) behind newer entries.
    await empty_redis.xadd(EVENTS_STREAM, {"event": b"{}"}, id=f"{first_ms + 1000}-0")
    await empty_redis.xdel(EVENTS_STREAM, first_id)
    assert await restore_lost_spend(short_engine, empty_redis)
    assert await spend_of(empty_redis, key.key_id) == 1030


async def test_keymgmt_tries_a_failed_restore_again(
    aiohttp_client: Any, engine: AsyncEngine, empty_redis: redis.Redis, settings: Settings
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 777, ago(60))
    # Locked longer than the statement timeout: keymgmt's first try fails.
    async with usage_events_locked(settings.postgres):
        await aiohttp_client(create_keymgmt(settings))
        await asyncio.sleep(settings.postgres.read_timeout + 1)
        assert not await empty_redis.exists(SPEND_MARKER)
    for _ in range(int(SPEND_CHECK_INTERVAL + 10) * 5):  # the next try, within one interval
        if await empty_redis.exists(SPEND_MARKER):
            break
        await asyncio.sleep(0.2)
    assert await spend_of(empty_redis, key.key_id) == 777


async def test_the_extra_rate_windows_are_rebuilt_too(
    engine: AsyncEngine, empty_redis: redis.Redis, pipe: RedisPipe
) -> None:
    key = await add_key(engine, rate_limit_over_time=100, rate_limit_unit="h")
    async with engine.begin() as connection:
        stored = [{"overTime": 5, "unit": "m"}, {"overTime": 50, "unit": "h"}]
        await connection.execute(
            keys.update().where(keys.c.key_id == key.key_id).values(rate_limits=stored)
        )
    key = replace(key, rate_limits=((5, "m"), (50, "h")))
    for seconds in (1800, 30, 10):
        await record(engine, key.key_id, 0, ago(seconds))
    assert await restore_lost_spend(engine, empty_redis)
    engine_ = LimitEngine(pipe, reservation_lifetime=60)
    assert (await engine_.usage(key)).requests_in_window == 3  # the hour's
    assert (await engine_.usage(replace(key, rate_limit_unit="m"))).requests_in_window == 2
    await empty_redis.set(SPEND_MARKER, "restored")
    admitted = [(await engine_.admit(key)).admitted for _ in range(4)]
    assert admitted == [True, True, True, False]  # the minute's 5 held, 2 of them before
