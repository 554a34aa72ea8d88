"""In-memory snapshots of configuration objects (keys, users): loaded in full at start, then
refreshed by `updated_at`, the same way for every kind (a Source names its queries)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
import orjson

from shared.metrics import Counter
from shared.models import Key, paths_of, windows_of
from shared.pg import LazyConnection, describe
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.snapshot")

# A change committed late can carry an `updated_at` earlier than the previous read's clock: a
# transaction's now() is its start. Re-reading this far back catches every such change, since
# writes are bounded by the write timeout.
OVERLAP = timedelta(seconds=30)


class KeySnapshot:
    """Keys by SHA-256 of the raw key, and by id. Lookups are one dict access."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Key] = {}
        self._by_id: dict[str, Key] = {}  # for work done later on a key's behalf (jobs)
        self.loaded = False
        self.refreshed_at = 0.0  # monotonic time of the last successful read

    def __len__(self) -> int:
        return len(self._by_hash)

    def get(self, key_hash: str) -> Key | None:
        return self._by_hash.get(key_hash)

    def by_id(self, key_id: str) -> Key | None:
        return self._by_id.get(key_id)

    def replace(self, live_keys: list[Key]) -> None:
        # Built aside, then rebound in one assignment: no request sees a half-loaded mapping.
        self._by_hash = {key.key_hash: key for key in live_keys}
        self._by_id = {key.key_id: key for key in live_keys}
        self.loaded = True

    def apply(self, changed: list[Key]) -> None:
        # No await between these updates, so no request observes a partly applied batch.
        by_hash, by_id = self._by_hash, self._by_id
        for key in changed:
            current = by_hash.get(key.key_hash)
            if key.deleted:
                by_id.pop(key.key_id, None)
                if current is not None and current.key_id == key.key_id:
                    del by_hash[key.key_hash]
                continue
            by_id[key.key_id] = key
            if (
                current is None
                or current.key_id == key.key_id
                or current.created_at <= key.created_at
            ):
                by_hash[key.key_hash] = key


PAGE = 20_000

# Only what the proxy needs, with times as epoch seconds: no name or reason to hold. Tags find
# the key's users.
SNAPSHOT_QUERY = """
    SELECT key_id::text, key_hash, tags, revoked, cost_limit_in_usd, cost_limit_in_usd_over_time,
        cost_limit_in_usd_unit, rate_limit_over_time, rate_limit_unit,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8,
        extract(epoch FROM expires_at)::float8, deleted_at IS NOT NULL,
        allowed_paths::text, allowed_models, rate_limits::text, should_log_request,
        should_log_response
    FROM keys"""
# Ordered by the uuid column, qualified: a bare `key_id` would name the text output column,
# and sorting by it cannot use the primary key (every page would sort the whole table).
FIRST_PAGE = f"{SNAPSHOT_QUERY} WHERE deleted_at IS NULL ORDER BY keys.key_id LIMIT $1"
NEXT_PAGE = (
    f"{SNAPSHOT_QUERY} WHERE deleted_at IS NULL AND keys.key_id > $2::uuid"
    " ORDER BY keys.key_id LIMIT $1"
)
CHANGED_SINCE = f"{SNAPSHOT_QUERY} WHERE updated_at >= $1"
BY_IDS = f"{SNAPSHOT_QUERY} WHERE keys.key_id = ANY($1::uuid[])"


def key_of(row: Any) -> Key:
    (key_id, key_hash, tags, revoked, cost, window_cost, window_unit, rate, rate_unit,
     created, updated, expires, deleted, paths, models, windows, log_request,
     log_response) = row  # fmt: skip
    return Key(
        key_id=key_id,
        name="",
        key_hash=key_hash,
        tags=tuple(tags),
        created_at=created,
        updated_at=updated,
        revoked=revoked,
        cost_limit_in_usd=cost,
        cost_limit_in_usd_over_time=window_cost,
        cost_limit_in_usd_unit=window_unit,
        rate_limit_over_time=rate,
        rate_limit_unit=rate_unit,
        expires_at=expires,
        deleted=deleted,
        allowed_paths=paths_of(orjson.loads(paths)),
        allowed_models=frozenset(models),
        rate_limits=windows_of(orjson.loads(windows)),
        should_log_request=log_request,
        should_log_response=log_response,
    )


T = TypeVar("T")


@dataclass(frozen=True)
class Source(Generic[T]):
    """How one kind of object is read: its queries (the page ones ordered by id, the next taking
    the last id as $2) and the object each row makes."""

    kind: str
    first_page: str
    next_page: str
    changed_since: str
    by_ids: str
    parse: Callable[[Any], T]
    id_of: Callable[[T], str]


KEYS: Source[Key] = Source(
    "key", FIRST_PAGE, NEXT_PAGE, CHANGED_SINCE, BY_IDS, key_of, lambda key: key.key_id
)


class Snapshot(Protocol[T]):
    loaded: bool
    refreshed_at: float

    def __len__(self) -> int: ...

    def replace(self, live: list[T], /) -> None: ...

    def apply(self, changed: list[T], /) -> None: ...


async def _load_all(connection: asyncpg.Connection, source: Source[T]) -> list[T]:
    """Every live object, a page at a time: each statement stays short, whatever the count."""
    loaded: list[T] = []
    parse = source.parse
    page = [parse(row) for row in await connection.fetch(source.first_page, PAGE)]
    while True:
        loaded += page
        if len(page) < PAGE:
            return loaded
        last = source.id_of(page[-1])
        page = [parse(row) for row in await connection.fetch(source.next_page, PAGE, last)]


class SnapshotRefresher(Generic[T]):
    """Keeps a snapshot current; Postgres being away only delays changes, never requests."""

    def __init__(
        self,
        database: LazyConnection,
        snapshot: Snapshot[T],
        interval: float,
        errors: Counter,
        source: Source[T],
    ) -> None:
        self._source = source
        self._database = database
        self._errors = errors
        self._snapshot = snapshot
        self._interval = interval
        self._read_clock: datetime | None = None  # Postgres's clock at the last read
        self._failing = False
        # One read and its apply at a time: a read started later is applied later, so an older
        # row never overwrites a newer one (nor revives a deleted key).
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        delay = 0.25
        while True:
            raise_if_cancelled()
            try:
                await self.refresh()
                self._recovered()
                delay = self._interval
            except Exception as error:
                raise_if_cancelled()
                self._failed(error)
                delay = (
                    min(delay * 2, self._interval) if not self._snapshot.loaded else self._interval
                )
            await asyncio.sleep(delay)

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    async def reload(self, object_ids: Collection[str]) -> None:
        """The keys named, read anew: the change feed's targeted reload."""
        async with self._lock:
            async with self._database.use() as connection:
                rows = await connection.fetch(self._source.by_ids, list(object_ids))
            self._snapshot.apply([self._source.parse(row) for row in rows])

    async def _refresh(self) -> None:
        async with self._database.use() as connection:
            # Taken before reading, so that what changes meanwhile is read again next time.
            clock = await connection.fetchval("SELECT now()")
            source = self._source
            if self._read_clock is None:
                loaded = await _load_all(connection, source)
            else:
                since = self._read_clock - OVERLAP
                rows = await connection.fetch(source.changed_since, since)
                loaded = [source.parse(row) for row in rows]
        if self._read_clock is None:
            self._snapshot.replace(loaded)
            # A million long-lived keys would make every full collection crawl over them.
            gc.collect()
            gc.freeze()
            kind = self._source.kind
            log.info(f"{kind} snapshot loaded", extra={f"{kind}s": len(loaded)})
        else:
            self._snapshot.apply(loaded)
        self._read_clock = clock
        self._snapshot.refreshed_at = time.monotonic()

    def _failed(self, error: Exception) -> None:
        self._errors.inc(operation="snapshot_refresh")
        if not self._snapshot.loaded:
            # Waiting for Postgres or for keymgmt to create the schema: one line per try.
            log.warning(
                "%s snapshot not loaded yet, retrying: %s", self._source.kind, describe(error)
            )
        elif not self._failing:
            log.warning(
                "%s snapshot refresh failed, serving from the last one: %s",
                self._source.kind,
                describe(error),
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info(
                f"{self._source.kind} snapshot refresh recovered",
                extra={f"{self._source.kind}s": len(self._snapshot)},
            )
        self._failing = False
