"""The proxy's key snapshot against Postgres: paged full load, then incremental changes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.store import KeyStore
from proxy import snapshot as snapshot_module
from proxy.routes.snapshot import ROUTE_SOURCE
from proxy.snapshot import KEYS, KeySnapshot, SnapshotRefresher
from shared.config import Settings
from shared.metrics import Counter, Metrics
from shared.models import hash_key
from shared.pg import LazyConnection


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[LazyConnection]:
    database = LazyConnection(settings.postgres)
    yield database
    await database.close()


def errors_counter() -> Counter:
    return Metrics().counter("errors_total", "errors", ("operation",))


async def test_full_load_in_pages_then_changes(
    engine: AsyncEngine,
    database: LazyConnection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = KeyStore(engine, settings.postgres)
    raws = [f"sk-snap-{uuid.uuid4().hex}" for _ in range(7)]
    created = [
        await store.create({"name": "s", "key": raw, "rateLimitOverTime": 5, "rateLimitUnit": "m"})
        for raw in raws
    ]
    monkeypatch.setattr(snapshot_module, "PAGE", 3)
    keys = KeySnapshot()
    refresher = SnapshotRefresher(database, keys, interval=1, errors=errors_counter(), source=KEYS)
    await refresher.refresh()
    for raw, config in zip(raws, created, strict=True):
        loaded = keys.get(hash_key(raw))
        assert loaded is not None and loaded.key_id == config.key_id
        assert (loaded.rate_limit_over_time, loaded.rate_limit_unit) == (5, "m")
        assert loaded.created_at == pytest.approx(config.created_at)

    await store.update(created[0].key_id, {"revoked": True})
    await store.delete(created[1].key_id)
    added = f"sk-snap-{uuid.uuid4().hex}"
    await store.create({"name": "late", "key": added, "ttl": "1h"})
    await refresher.refresh()
    revoked = keys.get(hash_key(raws[0]))
    assert revoked is not None and revoked.revoked
    assert keys.get(hash_key(raws[1])) is None
    late = keys.get(hash_key(added))
    assert late is not None and late.expires_at is not None


async def test_a_lost_connection_is_opened_anew(
    engine: AsyncEngine, database: LazyConnection, settings: Settings
) -> None:
    store = KeyStore(engine, settings.postgres)
    keys = KeySnapshot()
    refresher = SnapshotRefresher(database, keys, interval=1, errors=errors_counter(), source=KEYS)
    await refresher.refresh()
    async with database.use() as connection:
        backend = await connection.fetchval("SELECT pg_backend_pid()")
    async with engine.connect() as admin:
        await admin.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")

    raw = f"sk-snap-{uuid.uuid4().hex}"
    await store.create({"name": "after", "key": raw})
    with contextlib.suppress(Exception):
        await refresher.refresh()  # may find the connection dead, and drop it
    await refresher.refresh()
    assert keys.get(hash_key(raw)) is not None
    async with database.use() as connection:
        assert await connection.fetchval("SELECT pg_backend_pid()") != backend


PAGES = [
    (source.first_page if first else source.next_page, column)
    for source, column in ((KEYS, "key_id"), (ROUTE_SOURCE, "route_id"))
    for first in (True, False)
]


@pytest.mark.parametrize(("query", "column"), PAGES)
async def test_pages_are_ordered_by_the_uuid_column(
    engine: AsyncEngine, database: LazyConnection, query: str, column: str
) -> None:
    """Ordered by the text of the id, no index serves a page: with a million keys, every page
    sorted the whole table, a second each."""
    after = [str(uuid.UUID(int=0))] if "$2" in query else []
    async with database.use() as connection:
        plan = await connection.fetch(f"EXPLAIN {query}", snapshot_module.PAGE, *after)
    sort_keys = [row[0].strip() for row in plan if "Sort Key" in row[0]]
    assert all(line == f"Sort Key: {column}" for line in sort_keys), sort_keys
