"""The usage-event consumer: the proxies' Redis stream, written to Postgres in batches.

Entries are acknowledged only after their batch is committed, and rows are keyed by event id, so
a consumer killed at any point loses nothing and duplicates nothing: what it had read but not
acknowledged stays pending, and is claimed again by itself or by another consumer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import describe, is_unavailable, usage_events
from shared.limits import EVENT_FIELD, EVENTS_STREAM
from shared.metrics import Counter
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.events")

GROUP = "keymgmt"
EVENT_KEY = EVENT_FIELD.encode()
BATCH = 500


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: Any, limit: int = 512) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value.replace("\x00", "")[:limit]


def row_of(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The table row of one stream entry, or None for an entry that is not an event."""
    try:
        if EVENT_KEY in fields:
            event = orjson.loads(fields[EVENT_KEY])
        else:  # a field per value, as proxies before the JSON field wrote them
            event = {name.decode(): value.decode() for name, value in fields.items()}
        recorded_ms = int(entry_id.split(b"-")[0])
        return {
            "event_id": str(uuid.UUID(event["event_id"])),
            "request_id": _text(event["request_id"]),
            "key_id": str(uuid.UUID(event["key_id"])),
            "model": _text(event["model"]),
            "path": _text(event["path"]),
            "status": int(event["status"]),
            "prompt_tokens": int(event["prompt_tokens"]),
            "completion_tokens": int(event["completion_tokens"]),
            "cached_tokens": int(event["cached_tokens"]),
            "cost_nano": int(event["cost_nano"]),
            "latency_ms": float(event["latency_ms"]),
            "upstream_ms": float(event["upstream_ms"]),
            "streamed": event["streamed"] in (True, "1"),
            "created_at": datetime.fromtimestamp(float(event["time"]), UTC),
            "recorded_at": datetime.fromtimestamp(recorded_ms / 1000, UTC),
        }
    # JSONDecodeError and UnicodeDecodeError are ValueErrors.
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


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
        await self._write(entries)
        await self._client.xack(EVENTS_STREAM, GROUP, *(entry_id for entry_id, _ in entries))
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

    async def _read(self, start: str, block_ms: int = 0) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply: Any = await self._client.xreadgroup(
            GROUP, self.name, {EVENTS_STREAM: start}, count=BATCH, block=block_ms or None
        )
        return [entry for _, entries in reply or () for entry in entries if entry[1]]

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        # Entries a dead consumer read but never acknowledged.
        reply = await self._client.xautoclaim(
            EVENTS_STREAM, GROUP, self.name, self._claim_idle_ms, start_id="0-0", count=BATCH
        )
        return [entry for entry in reply[1] if entry[1]]

    async def _write(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        rows = []
        for entry_id, fields in entries:
            row = row_of(entry_id, fields)
            if row is None:
                log.error("skipping a malformed usage event %s", entry_id.decode())
            else:
                rows.append(row)
        if rows:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(usage_events).on_conflict_do_nothing(index_elements=["event_id"]), rows
                )
            self._written.inc(len(rows))

    def _failed(self, error: BaseException) -> None:
        if not self._failing:
            log.warning("usage events are waiting in Redis: %s", describe(error))
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("usage events flowing again")
        self._failing = False
