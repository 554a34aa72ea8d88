"""In-memory snapshots of configuration objects (keys, routes, ...): loaded in full at start, in
pages, then refreshed by `updated_at` and by the change feed, each batch applied in one step.

One refresher serves every kind: a `SnapshotSource` says how its rows are read and parsed, and
the snapshot it fills takes `replace` (the full load) and `apply` (changed rows, tombstones
included)."""

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

from shared.changes import KEY
from shared.metrics import Counter
from shared.models import Key
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
    loaded: bool
    refreshed_at: float  # monotonic time of the last successful read

    def __len__(self) -> int: ...

    def replace(self, live: list[T]) -> None: ...

    def apply(self, changed: list[T]) -> None: ...


@dataclass(frozen=True, slots=True)
class SnapshotSource(Generic[T]):
    """How the objects of one kind are read: `select` is `SELECT ... FROM <table>` naming only what
    the proxy needs, `id_column` the table's uuid primary key; `deleted_at` and `updated_at` are
    the columns every configuration table has."""

    kind: str  # as in shared.changes, and in log lines
    select: str
    id_column: str
    parse: Callable[[Any], T]
    id_of: Callable[[T], str]

    @property
    def first_page(self) -> str:
        # Ordered by the uuid column, qualified: a bare name would be a text output column, and
        # sorting by it cannot use the primary key (every page would sort the whole table).
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
    SELECT key_id::text, key_hash, revoked, cost_limit_in_usd, cost_limit_in_usd_over_time,
        cost_limit_in_usd_unit, rate_limit_over_time, rate_limit_unit,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8,
        extract(epoch FROM expires_at)::float8, deleted_at IS NOT NULL
    FROM keys"""


def key_of(row: Any) -> Key:
    (key_id, key_hash, revoked, cost, window_cost, window_unit, rate, rate_unit,
     created, updated, expires, deleted) = row  # fmt: skip
    return Key(
        key_id=key_id,
        name="",
        key_hash=key_hash,
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
    )


KEY_SOURCE = SnapshotSource(KEY, SNAPSHOT_QUERY, "keys.key_id", key_of, lambda key: key.key_id)


async def _load_all(connection: asyncpg.Connection, source: SnapshotSource[T]) -> list[T]:
    """Every live object, a page at a time: each statement stays short, whatever the count."""
    loaded: list[T] = []
    page = [source.parse(row) for row in await connection.fetch(source.first_page, PAGE)]
    while True:
        loaded += page
        if len(page) < PAGE:
            return loaded
        rows = await connection.fetch(source.next_page, PAGE, source.id_of(page[-1]))
        page = [source.parse(row) for row in rows]


class SnapshotRefresher(Generic[T]):
    """Keeps a snapshot current; Postgres being away only delays changes, never requests.
    Keys unless another source is given."""

    def __init__(
        self,
        database: LazyConnection,
        snapshot: Snapshot[T],
        interval: float,
        errors: Counter,
        source: SnapshotSource[Any] = KEY_SOURCE,
    ) -> None:
        self._database = database
        self._source: SnapshotSource[T] = source
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
        """The objects named, read anew: the change feed's targeted reload."""
        source = self._source
        async with self._lock:
            async with self._database.use() as connection:
                rows = await connection.fetch(source.by_ids, list(object_ids))
            self._snapshot.apply([source.parse(row) for row in rows])

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
                loaded = [source.parse(row) for row in rows]
        if self._read_clock is None:
            self._snapshot.replace(loaded)
            # A million long-lived keys would make every full collection crawl over them.
            gc.collect()
            gc.freeze()
            log.info("%s snapshot loaded", source.kind, extra={"objects": len(loaded)})
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
                "%s snapshot refresh recovered",
                self._source.kind,
                extra={"objects": len(self._snapshot)},
            )
        self._failing = False
