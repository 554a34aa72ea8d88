"""The change feed: LISTEN on a dedicated connection, reload each object named as it changes.

A notification names an object (shared.changes); the reloader registered for its kind reads that
object anew. Notifications sent while no connection listens are lost, so every (re)connection
LISTENs first and then has every reloader run its incremental refresh. A `SELECT 1` heartbeat
finds a connection that died without a word; the periodic refreshes remain the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from shared.changes import CHANNEL, parse_change
from shared.config import PostgresSettings
from shared.metrics import Counter, Histogram, Metrics
from shared.pg import connect, describe
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.changefeed")

APPLICATION_NAME = "gateway-changefeed"  # how the listening session shows in pg_stat_activity
HEARTBEAT = 3.0
RETRY_FIRST, RETRY_MAX = 0.1, 1.0
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Reloader(Protocol):
    async def reload(self, object_ids: Collection[str]) -> None:
        """Read these objects anew and apply them in one step."""

    async def refresh(self) -> None:
        """Read every object changed since the last refresh."""


@dataclass(frozen=True)
class FeedMetrics:
    lag: Histogram
    connects: Counter
    errors: Counter

    @classmethod
    def register(cls, metrics: Metrics, errors: Counter) -> FeedMetrics:
        return cls(
            lag=metrics.histogram(
                "gateway_change_lag_seconds",
                "From a change's commit to its application at this proxy",
                ("kind",),
                buckets=LAG_BUCKETS,
            ),
            connects=metrics.counter(
                "gateway_change_feed_connects_total", "Change feed connections opened"
            ),
            errors=errors,
        )


class ChangeFeed:
    def __init__(
        self, settings: PostgresSettings, reloaders: Mapping[str, Reloader], metrics: FeedMetrics
    ) -> None:
        self._settings = settings
        self._reloaders = reloaders
        self._metrics = metrics
        # kind -> object id -> commit time of its oldest change not yet applied
        self._pending: dict[str, dict[str, float]] = {}
        self._wake = asyncio.Event()
        self._retry = RETRY_FIRST
        self._failing = False
        self.listening = False

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                await self._session()
            except Exception as error:
                raise_if_cancelled()
                self._failed(error)
            await asyncio.sleep(self._retry)
            self._retry = min(self._retry * 2, RETRY_MAX)

    async def _session(self) -> None:
        connection = await connect(self._settings, APPLICATION_NAME)
        closed = asyncio.Event()  # this connection's own: a late callback of the last is harmless

        def terminated(_connection: Any) -> None:
            closed.set()
            self._wake.set()

        connection.add_termination_listener(terminated)
        try:
            await connection.add_listener(CHANNEL, self._received)
            # Listening first: a change committed from here on is notified, one before is read.
            for reloader in self._reloaders.values():
                await reloader.refresh()
            self._metrics.connects.inc()
            self.listening = True
            self._retry = RETRY_FIRST
            self._recovered()
            await self._follow(connection, closed)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # stopping: say goodbye to Postgres
                await connection.close(timeout=self._settings.read_timeout)
            raise
        finally:
            self.listening = False
            connection.terminate()

    async def _follow(self, connection: asyncpg.Connection, closed: asyncio.Event) -> None:
        beat_at = time.monotonic() + HEARTBEAT
        while True:
            self._wake.clear()
            await self._apply_pending()
            if closed.is_set():
                raise ConnectionError("the listening connection was closed")
            if time.monotonic() >= beat_at:
                await connection.fetchval("SELECT 1", timeout=self._settings.read_timeout)
                beat_at = time.monotonic() + HEARTBEAT
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, beat_at - time.monotonic())):
                    await self._wake.wait()

    async def _apply_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for kind, changed in pending.items():
            reloader = self._reloaders[kind]
            try:
                await reloader.reload(changed)
            except Exception as error:
                raise_if_cancelled()
                self._metrics.errors.inc(operation="change_reload")
                log.warning("reloading changed %ss failed, refreshing: %s", kind, describe(error))
                await reloader.refresh()  # should this fail too, the next session refreshes
            now = time.time()
            lag = self._metrics.lag.series(kind=kind)
            for committed_at in changed.values():
                lag.observe(max(0.0, now - committed_at))

    def _received(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        change = parse_change(payload)
        if change is None or change.kind not in self._reloaders:
            log.debug("ignored a change notification of an unknown shape or kind")
            return
        changed = self._pending.setdefault(change.kind, {})
        changed.setdefault(change.object_id, change.committed_at)
        self._wake.set()

    def _failed(self, error: Exception) -> None:
        self._metrics.errors.inc(operation="change_feed")
        if not self._failing:
            log.warning(
                "change feed lost, changes wait for the next refresh meanwhile: %s",
                describe(error),
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("change feed listening again")
        self._failing = False
