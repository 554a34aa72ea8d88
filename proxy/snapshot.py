"""The in-memory snapshots of configuration objects (keys, settings, routes, policies): loaded in
full at start, a page at a time, then refreshed by `updated_at` and by the change feed's reloads."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
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

T = TypeVar("T")


class Snapshot(Protocol[T]):
    """What a refresher keeps current: a mapping rebuilt whole, or changed in one step."""

    loaded: bool
    refreshed_at: float

    def __len__(self) -> int: ...

    def replace(self, live: list[T]) -> None: ...

    def apply(self, changed: list[T]) -> None: ...


@dataclass(frozen=True)
class Source(Generic[T]):
    """How one kind of configuration object is read: its columns, and each row as an object."""

    what: str  # in log lines: "key", "provider setting"
    plural: str  # the count's name in log lines
    select: str  # SELECT <columns> FROM <table>
    id_column: str  # the uuid primary key, qualified by its table
    of_row: Callable[[Any], T]
    id_of: Callable[[T], str]
    # Freeze what the first load made: long-lived objects would slow every full collection.
    freeze: bool = False

    @property
    def first_page(self) -> str:
        # Ordered by the uuid column, qualified: a bare name would be the text output column,
        # and sorting by it cannot use the primary key (every page would sort the whole table).
        return f"{self.select} WHERE deleted_at IS NULL ORDER BY {self.id_column} LIMIT $1"

    @property
    def next_page(self) -> str:
        return (
            f"{self.select} WHERE deleted_at IS NULL AND {self.id_column} > $2::uuid"
            f" ORDER BY {self.id_column} LIMIT $1"
        )

    @property
    def changed_since(self) -> str:
        return f"{self.select} WHERE updated_at >= $1"

    @property
    def by_ids(self) -> str:
        return f"{self.select} WHERE {self.id_column} = ANY($1::uuid[])"


# Only what the proxy needs, with times as epoch seconds: no name, tags or reason to hold.
SNAPSHOT_QUERY = """
    SELECT key_id::text, key_hash, tags, revoked, cost_limit_in_usd, cost_limit_in_usd_over_time,
        cost_limit_in_usd_unit, rate_limit_over_time, rate_limit_unit,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8,
        extract(epoch FROM expires_at)::float8, deleted_at IS NOT NULL,
        setting_ids::text[], rotation_enabled, coalesce(policy_id::text, ''),
        allowed_paths::text, allowed_models, rate_limits::text, should_log_request,
        should_log_response
    FROM keys"""


def key_of(row: Any) -> Key:
    (key_id, key_hash, tags, revoked, cost, window_cost, window_unit, rate, rate_unit,
     created, updated, expires, deleted, setting_ids, rotation, policy_id, paths, models,
     windows, log_request, log_response) = row  # fmt: skip
    return Key(
        key_id=key_id,
        name="",
        key_hash=key_hash,
        tags=tuple(tags),  # users are matched by them
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
        # Many keys share a setting: one string per id, not one per key.
        setting_ids=tuple(sys.intern(i) for i in setting_ids) if setting_ids else (),
        rotation_enabled=rotation,
        policy_id=policy_id,
        allowed_paths=paths_of(orjson.loads(paths)),
        allowed_models=frozenset(models),
        rate_limits=windows_of(orjson.loads(windows)),
        should_log_request=log_request,
        should_log_response=log_response,
    )


KEYS: Source[Key] = Source(
    "key", "keys", SNAPSHOT_QUERY, "keys.key_id", key_of, lambda key: key.key_id, freeze=True
)
FIRST_PAGE, NEXT_PAGE = KEYS.first_page, KEYS.next_page


async def _load_all(connection: asyncpg.Connection, source: Source[T]) -> list[T]:
    """Every live object, a page at a time: each statement stays short, whatever the count."""
    loaded: list[T] = []
    first_page, next_page = source.first_page, source.next_page
    page = [source.of_row(row) for row in await connection.fetch(first_page, PAGE)]
    while True:
        loaded += page
        if len(page) < PAGE:
            return loaded
        after = source.id_of(page[-1])
        page = [source.of_row(row) for row in await connection.fetch(next_page, PAGE, after)]


class SnapshotRefresher(Generic[T]):
    """Keeps a snapshot of one source current; Postgres being away only delays changes, never
    requests. Keys by default; every configuration object the proxy holds is read the same way."""

    def __init__(
        self,
        database: LazyConnection,
        snapshot: Snapshot[T],
        interval: float,
        errors: Counter,
        source: Source[T] = KEYS,  # type: ignore[assignment]  # T is Key when defaulted
    ) -> None:
        self._database = database
        self._errors = errors
        self._snapshot = snapshot
        self._interval = interval
        self._source = source
        self._read_clock: datetime | None = None  # Postgres's clock at the last read
        self._failing = False
        # One read and its apply at a time: a read started later is applied later, so an older
        # row never overwrites a newer one (nor revives a deleted object).
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
        """The objects named, read anew: the change feed's targeted reload."""
        async with self._lock:
            async with self._database.use() as connection:
                rows = await connection.fetch(self._source.by_ids, list(object_ids))
            self._snapshot.apply([self._source.of_row(row) for row in rows])

    async def _refresh(self) -> None:
        source = self._source
        async with self._database.use() as connection:
            # Taken before reading, so that what changes meanwhile is read again next time.
            clock = await connection.fetchval("SELECT now()")
            if self._read_clock is None:
                loaded = await _load_all(connection, source)
            else:
                since = self._read_clock - OVERLAP
                rows = await connection.fetch(source.changed_since, since)
                loaded = [source.of_row(row) for row in rows]
        if self._read_clock is None:
            self._snapshot.replace(loaded)
            if source.freeze:
                gc.collect()
                gc.freeze()
            log.info(f"{source.what} snapshot loaded", extra={source.plural: len(loaded)})
        else:
            self._snapshot.apply(loaded)
        self._read_clock = clock
        self._snapshot.refreshed_at = time.monotonic()

    def _failed(self, error: Exception) -> None:
        self._errors.inc(operation="snapshot_refresh")
        if not self._snapshot.loaded:
            # Waiting for Postgres or for keymgmt to create the schema: one line per try.
            what = self._source.what
            log.warning("%s snapshot not loaded yet, retrying: %s", what, describe(error))
        elif not self._failing:
            log.warning(
                "%s snapshot refresh failed, serving from the last one: %s",
                self._source.what,
                describe(error),
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info(
                f"{self._source.what} snapshot refresh recovered",
                extra={self._source.plural: len(self._snapshot)},
            )
        self._failing = False
