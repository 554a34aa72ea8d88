"""The usage-event consumer: the proxies' Redis stream, written to Postgres in batches.

Entries are acknowledged only after their batch is committed, and rows are keyed by event id, so
a consumer killed at any point loses nothing and duplicates nothing: what it had read but not
acknowledged stays pending, and is claimed again by itself or by another consumer. An event
Postgres refuses is kept aside in usage_events_rejected, so that it cannot stall the others.
After each commit the stream is trimmed below the oldest entry not yet written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import redis.asyncio as redis
import sqlalchemy as sa
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keymgmt.event_rows import rejection, row_of
from shared.db import EVENT_WRITE_LOCK, usage_events, usage_events_rejected
from shared.db_engine import is_unavailable
from shared.limit_keys import EVENTS_STREAM, SPEND_MARKER
from shared.metrics import Counter
from shared.pg import describe
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.events")

GROUP = "keymgmt"
BATCH = 500
Entry = tuple[bytes, dict[bytes, bytes]]
Parsed = tuple[bytes, dict[bytes, bytes], dict[str, Any]]  # an entry and its table row

# Trims below the oldest pending entry, or below the last acknowledged one when none is pending:
# every lower entry was delivered and acknowledged. Not while the spend marker is absent: the
# spend restore then needs the first entry of the stream (see keymgmt.spend).
TRIM = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
return redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest or ARGV[2])
"""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def is_rejection(error: BaseException) -> bool:
    """Postgres refused the data itself (SQLSTATE class 22 or 23): sending it again cannot help."""
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return isinstance(error, exc.DBAPIError) and code[:2] in ("22", "23")


class EventConsumer:
    def __init__(
        self,
        client: redis.Redis,
        engine: AsyncEngine,
        written: Counter,
        name: str | None = None,
        claim_idle_ms: int = 60_000,
        block_ms: int = 500,
    ) -> None:
        self._client = client
        self._engine = engine
        self._written = written
        self.name = name or consumer_name()
        self._claim_idle_ms = claim_idle_ms
        self._block_ms = block_ms  # below the Redis read timeout, or every idle read times out
        self._failing = False
        self._group_ready = False
        self._trim = client.register_script(TRIM)

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
                self._group_ready = False  # a restarted Redis has lost the group
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def consume_once(self, block_ms: int = 0) -> int:
        """Write one batch: this consumer's pending entries first, then stale ones, then new."""
        await self._ensure_group()
        entries = await self._read("0")
        if not entries:
            entries = await self._claim()
        if not entries:
            entries = await self._read(">", block_ms)
        if not entries:
            return 0
        # An entry trimmed before it was written has no fields: nothing of it is left to write,
        # and acknowledging it lets the trimming pass it.
        await self._write([entry for entry in entries if entry[1]])
        ids = [entry_id for entry_id, _ in entries]
        acknowledged = await self._client.xack(EVENTS_STREAM, GROUP, *ids)
        # Fewer acknowledged: this may not be the Redis they were read from (it restarted), whose
        # ids are no bound for the new stream's. The next batch trims.
        if acknowledged == len(ids):
            last = max(ids, key=stream_order)
            await self._trim(keys=[EVENTS_STREAM, SPEND_MARKER], args=[GROUP, last])
        return len(entries)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(EVENTS_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def _read(self, start: str, block_ms: int = 0) -> list[Entry]:
        reply: Any = await self._client.xreadgroup(
            GROUP, self.name, {EVENTS_STREAM: start}, count=BATCH, block=block_ms or None
        )
        return [entry for _, entries in reply or () for entry in entries]

    async def _claim(self) -> list[Entry]:
        # Entries a dead consumer read but never acknowledged.
        reply = await self._client.xautoclaim(
            EVENTS_STREAM, GROUP, self.name, self._claim_idle_ms, start_id="0-0", count=BATCH
        )
        return list(reply[1])

    async def _write(self, entries: list[Entry]) -> None:
        rows: list[Parsed] = []
        parked: list[dict[str, Any]] = []
        for entry_id, fields in entries:
            row = row_of(entry_id, fields)
            if row is None:
                log.error("keeping aside a malformed usage event %s", entry_id.decode())
                parked.append(rejection(entry_id, fields, None, "malformed"))
            else:
                rows.append((entry_id, fields, row))
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
            for entry_id, fields, row in sorted(rows, key=lambda item: item[2]["key_id"]):
                try:
                    async with connection.begin_nested():
                        await connection.execute(_insert_events([row]))
                except exc.DBAPIError as error:
                    if is_unavailable(error) or not is_rejection(error):
                        raise
                    log.error(
                        "keeping aside a usage event Postgres refused %s: %s",
                        entry_id.decode(),
                        describe(error),
                    )
                    await _park(connection, [rejection(entry_id, fields, row, describe(error))])
            await _park(connection, parked)  # malformed ones: no key, nothing locked

    def _failed(self, error: BaseException) -> None:
        if not self._failing:
            log.warning("usage events are waiting in Redis: %s", describe(error))
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("usage events flowing again")
        self._failing = False


def stream_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split(b"-")
    return int(milliseconds), int(sequence)


async def _hold_off_restores(connection: AsyncConnection) -> None:
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(EVENT_WRITE_LOCK)))


def _insert_events(rows: list[dict[str, Any]]) -> Any:
    # One statement, so that the spend trigger runs once per batch.
    return insert(usage_events).values(rows).on_conflict_do_nothing(index_elements=["event_id"])


async def _park(connection: AsyncConnection, parked: list[dict[str, Any]]) -> None:
    if parked:
        statement = insert(usage_events_rejected).values(parked)
        await connection.execute(statement.on_conflict_do_nothing(index_elements=["entry_id"]))
