"""The proxy's change feed against Postgres: targeted reloads, and no change lost across a gap.

No periodic refresh runs here: what reaches the snapshot came through the feed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import pytest
import services
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.store import KeyStore
from proxy import changefeed
from proxy.changefeed import APPLICATION_NAME, ChangeFeed, FeedMetrics
from proxy.snapshot import KEYS, KeySnapshot, SnapshotRefresher
from shared.changes import CHANNEL, KEY
from shared.config import Settings
from shared.db_engine import create_engine, migrate
from shared.metrics import Metrics
from shared.models import Key, hash_key
from shared.pg import LazyConnection, connect
from shared.runtime import stop_task
from tests.conftest import on_postgres


@dataclass
class Feed:
    feed: ChangeFeed
    snapshot: KeySnapshot
    metrics: Metrics
    settings: Settings

    def key(self, raw: str) -> Key | None:
        return self.snapshot.get(hash_key(raw))

    async def listener(self) -> tuple[int, datetime]:
        """The pid and start of the listening session, once there is one."""
        connection = await connect(self.settings.postgres)
        try:
            while True:
                row = await connection.fetchrow(
                    "SELECT pid, backend_start FROM pg_stat_activity"
                    " WHERE application_name = $1 AND datname = current_database()",
                    APPLICATION_NAME,
                )
                if row is not None and self.feed.listening:
                    return row["pid"], row["backend_start"]
                await asyncio.sleep(0.02)
        finally:
            await connection.close()


async def until(done: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def start_feed(settings: Settings) -> AsyncIterator[Feed]:
    metrics = Metrics()
    errors = metrics.counter("errors_total", "errors", ("operation",))
    database = LazyConnection(settings.postgres)
    snapshot = KeySnapshot()
    refresher = SnapshotRefresher(database, snapshot, interval=3600, errors=errors, source=KEYS)
    feed = ChangeFeed(settings.postgres, {KEY: refresher}, FeedMetrics.register(metrics, errors))
    task = asyncio.create_task(feed.run())
    running = Feed(feed, snapshot, metrics, settings)
    await asyncio.wait_for(running.listener(), 10)
    yield running
    await stop_task(task)
    await database.close()


@pytest.fixture
async def feed(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Feed]:
    async with start_feed(settings) as running:
        yield running


async def test_each_change_is_applied_as_it_commits(
    engine: AsyncEngine, settings: Settings, feed: Feed
) -> None:
    store = KeyStore(engine, settings.postgres)
    raw = f"sk-feed-{uuid.uuid4().hex}"
    created = await store.create({"name": "n", "key": raw})
    await until(lambda: feed.key(raw) is not None, 1, "created")

    await store.update(created.key_id, {"rateLimitOverTime": 3, "rateLimitUnit": "m"})
    await until(lambda: getattr(feed.key(raw), "rate_limit_over_time", 0) == 3, 1, "patched")
    await store.update(created.key_id, {"revoked": True})
    await until(lambda: getattr(feed.key(raw), "revoked", False), 1, "revoked")
    await store.delete(created.key_id)
    await until(lambda: feed.key(raw) is None, 1, "deleted")

    exposition = feed.metrics.exposition()[0].decode()
    assert 'gateway_change_lag_seconds_count{kind="key"} 4.0' in exposition


async def test_foreign_notifications_do_not_stop_the_feed(
    engine: AsyncEngine, settings: Settings, feed: Feed
) -> None:
    pid, _ = await feed.listener()
    connection = await connect(settings.postgres)
    try:
        for payload in ("junk", '{"kind": "key", "id": "not-a-uuid", "version": 1, "at": 1}'):
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await connection.close()
    raw = f"sk-feed-{uuid.uuid4().hex}"
    await KeyStore(engine, settings.postgres).create({"name": "n", "key": raw})
    await until(lambda: feed.key(raw) is not None, 1, "created after the foreign payloads")
    assert (await feed.listener())[0] == pid  # the same session: a bad id costs a refresh only


@pytest.fixture
async def slow_feed(
    engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Feed]:
    """A feed that waits a second before it reconnects: a gap long enough to write in."""
    monkeypatch.setattr(changefeed, "RETRY_FIRST", 1.0)
    async with start_feed(settings) as running:
        yield running


async def test_a_change_made_while_the_listener_is_away_is_applied_on_reconnect(
    engine: AsyncEngine, settings: Settings, slow_feed: Feed
) -> None:
    feed = slow_feed
    store = KeyStore(engine, settings.postgres)
    raw = f"sk-feed-{uuid.uuid4().hex}"
    created = await store.create({"name": "n", "key": raw})
    await until(lambda: feed.key(raw) is not None, 1, "created")
    pid, _ = await feed.listener()
    connection = await connect(settings.postgres)
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await connection.close()
    revoked = await store.update(created.key_id, {"revoked": True})

    await until(lambda: getattr(feed.key(raw), "revoked", False), 3, "revoked after the gap")
    new_pid, listening_since = await feed.listener()
    assert new_pid != pid
    # The change committed before the new session began: no notification could carry it.
    assert listening_since.timestamp() > revoked.updated_at


@pytest.fixture
async def private(
    settings: Settings, private_postgres: services.Postgres
) -> AsyncIterator[tuple[Settings, AsyncEngine]]:
    """Settings and a migrated engine on a Postgres of the test's own, to stop and signal."""
    private = on_postgres(settings, private_postgres)
    engine = create_engine(private.postgres)
    await migrate(engine)
    yield private, engine
    await engine.dispose()


async def test_a_connection_that_stops_answering_is_replaced(
    private: tuple[Settings, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = private
    monkeypatch.setattr(changefeed, "HEARTBEAT", 0.2)
    async with start_feed(settings) as feed:
        pid, _ = await feed.listener()
        os.kill(pid, signal.SIGSTOP)  # no answer and no close: only the heartbeat can tell
        try:
            await until(lambda: not feed.feed.listening, 10, "the silent connection noticed")
        finally:
            os.kill(pid, signal.SIGCONT)
        new_pid, _ = await asyncio.wait_for(feed.listener(), 10)
        assert new_pid != pid
        raw = f"sk-feed-{uuid.uuid4().hex}"
        await KeyStore(engine, settings.postgres).create({"name": "n", "key": raw})
        await until(lambda: feed.key(raw) is not None, 1, "created on the new connection")


async def test_postgres_restarted_the_feed_reconnects_and_misses_nothing(
    private: tuple[Settings, AsyncEngine], private_postgres: services.Postgres
) -> None:
    settings, engine = private
    store = KeyStore(engine, settings.postgres)
    async with start_feed(settings) as feed:
        before, during, after = (f"sk-feed-{uuid.uuid4().hex}" for _ in range(3))
        made = await store.create({"name": "before", "key": before})
        await until(lambda: feed.key(before) is not None, 1, "created before")

        await asyncio.to_thread(private_postgres.stop)
        await until(lambda: not feed.feed.listening, 5, "the feed noticed the stop")
        await asyncio.to_thread(private_postgres.start)
        await store.update(made.key_id, {"revoked": True})
        await store.create({"name": "during", "key": during})
        await asyncio.wait_for(feed.listener(), 10)
        await store.create({"name": "after", "key": after})

        await until(lambda: getattr(feed.key(before), "revoked", False), 2, "revoked")
        await until(lambda: feed.key(during) is not None, 2, "created at the restart")
        await until(lambda: feed.key(after) is not None, 1, "created after")


async def test_the_listener_is_a_session_of_its_own(feed: Feed) -> None:
    pid, _ = await feed.listener()
    connection: asyncpg.Connection = await connect(feed.settings.postgres)
    try:
        query = await connection.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await connection.close()
    assert query in (f'LISTEN "{CHANNEL}"', "SELECT 1")
