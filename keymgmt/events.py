"""The usage-event consumer: the proxies' Redis stream (one per slot in a cluster, see
keymgmt.event_streams), written to Postgres in batches.

Entries are acknowledged only after their batch is committed, and rows are keyed by event id, so
a consumer killed at any point loses nothing and duplicates nothing: what it had read but not
acknowledged stays pending, and is claimed again by itself or by another consumer. An event
Postgres refuses is kept aside in usage_events_rejected, so that it cannot stall the others.
After each commit a stream is trimmed below its oldest entry not yet written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keymgmt.event_rows import rejection, row_of
from keymgmt.event_streams import BATCH, Entry, OneStream, SlotStreams
from keymgmt.slot_batches import KeymgmtRedis, SlotBatches
from shared.db import EVENT_WRITE_LOCK, usage_events, usage_events_rejected
from shared.db_engine import is_unavailable
from shared.metrics import Counter
from shared.pg import describe
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.events")

Named = tuple[str, Entry]  # an entry and its name in usage_events_rejected
Parsed = tuple[str, Entry, dict[str, Any]]  # and its table row


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def is_rejection(error: BaseException) -> bool:
    """Postgres refused the data itself (SQLSTATE class 22 or 23): sending it again cannot help."""
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return isinstance(error, exc.DBAPIError) and code[:2] in ("22", "23")


class EventConsumer:
    def __init__(
        self,
        client: KeymgmtRedis,
        engine: AsyncEngine,
        written: Counter,
        name: str | None = None,
        claim_idle_ms: int = 60_000,
        block_ms: int = 500,
    ) -> None:
        self._engine = engine
        self._written = written
        self.name = name or consumer_name()
        self._block_ms = block_ms  # below the Redis read timeout, or every idle read times out
        self._failing = False
        self._streams = (
            SlotStreams(client, self.name, claim_idle_ms)
            if isinstance(client, SlotBatches)
            else OneStream(client, self.name, claim_idle_ms)
        )

    async def run(self) -> None:
        delay = 0.5
        while True:
            raise_if_cancelled()
            try:
                await self.consume_once(self._block_ms)
                delay = 0.5
                self._recovered()
            except Exception as error:
                raise_if_cancelled()
                if not (isinstance(error, RedisError | OSError) or is_unavailable(error)):
                    log.exception("usage event consumer failed; retrying")
                self._streams.reset()
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def consume_once(self, block_ms: int = 0) -> int:
        """Write one batch: this consumer's pending entries first, then stale ones, then new."""
        read = await self._streams.read(block_ms)
        # An entry trimmed before it was written has no fields: nothing of it is left to write,
        # and acknowledging it lets the trimming pass it.
        named = [
            (self._streams.entry_name(stream, entry[0]), entry)
            for stream, entries in read
            for entry in entries
            if entry[1]
        ]
        for start in range(0, len(named), BATCH):
            await self._write(named[start : start + BATCH])
        await self._streams.done(read)
        return sum(len(entries) for _, entries in read)

    async def _write(self, entries: list[Named]) -> None:
        rows: list[Parsed] = []
        parked: list[dict[str, Any]] = []
        for name, entry in entries:
            row = row_of(*entry)
            if row is None:
                log.error("keeping aside a malformed usage event %s", name)
                parked.append(rejection(name, entry, None, "malformed"))
            else:
                rows.append((name, entry, row))
        if not (rows or parked):
            return
        try:
            async with self._engine.begin() as connection:
                await _hold_off_restores(connection)
                if rows:
                    await connection.execute(_insert_events([row for _, _, row in rows]))
                await _park(connection, parked)
        except exc.DBAPIError as error:
            if is_unavailable(error) or not is_rejection(error):
                raise
            await self._write_each(rows, parked)
        self._written.inc(len(rows))

    async def _write_each(self, rows: list[Parsed], parked: list[dict[str, Any]]) -> None:
        """One event at a time, keeping aside those Postgres refuses; in key order, as the batch
        insert locks the keys' totals, so that concurrent consumers never deadlock."""
        async with self._engine.begin() as connection:
            await _hold_off_restores(connection)
            for name, entry, row in sorted(rows, key=lambda item: item[2]["key_id"]):
                try:
                    async with connection.begin_nested():
                        await connection.execute(_insert_events([row]))
                except exc.DBAPIError as error:
                    if is_unavailable(error) or not is_rejection(error):
                        raise
                    log.error(
                        "keeping aside a usage event Postgres refused %s: %s", name, describe(error)
                    )
                    await _park(connection, [rejection(name, entry, row, describe(error))])
            await _park(connection, parked)  # malformed ones: no key, nothing locked

    def _failed(self, error: BaseException) -> None:
        if not self._failing:
            log.warning("usage events are waiting in Redis: %s", describe(error))
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("usage events flowing again")
        self._failing = False


async def _hold_off_restores(connection: AsyncConnection) -> None:
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(EVENT_WRITE_LOCK)))


def _insert_events(rows: list[dict[str, Any]]) -> Any:
    # One statement, so that the spend trigger runs once per batch.
    return insert(usage_events).values(rows).on_conflict_do_nothing(index_elements=["event_id"])


async def _park(connection: AsyncConnection, parked: list[dict[str, Any]]) -> None:
    if parked:
        statement = insert(usage_events_rejected).values(parked)
        await connection.execute(statement.on_conflict_do_nothing(index_elements=["entry_id"]))
