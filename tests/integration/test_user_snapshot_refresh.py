"""The proxy's user snapshot against Postgres, refreshed beside the key snapshot on one
connection: paged full load, changes, deletions, and the two refreshers taking turns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.store import KeyStore
from keymgmt.users import UserStore
from proxy import snapshot as snapshot_module
from proxy.snapshot import KEYS, KeySnapshot, SnapshotRefresher
from proxy.users import USERS, UserSnapshot
from shared.config import Settings
from shared.pg import LazyConnection
from tests.integration.test_snapshot import errors_counter

CHAT = "/api/providers/openai/v1/chat/completions"


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[LazyConnection]:
    database = LazyConnection(settings.postgres)
    yield database
    await database.close()


async def test_users_load_in_pages_and_follow_changes(
    engine: AsyncEngine, database: LazyConnection, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    store = UserStore(KeyStore(engine, settings.postgres))
    key_id, tag = str(uuid.uuid4()), uuid.uuid4().hex
    made = [
        await store.create({"userId": f"u{i}", "keyIds": [uuid.UUID(key_id)], "tags": [tag],
                            "costLimitInUsd": 2.0, "rateLimitOverTime": 3, "rateLimitUnit": "m",
                            "ttl": "1h", "allowedPaths": [{"path": CHAT, "method": "post"}],
                            "allowedModels": ["gpt-4o"]})
        for i in range(5)
    ]  # fmt: skip
    monkeypatch.setattr(snapshot_module, "PAGE", 2)
    users = UserSnapshot()
    refresher = SnapshotRefresher(database, users, 1, errors_counter(), USERS)
    await refresher.refresh()
    assert all(users.by_id(user.record_id) is not None for user in made)  # over 3 pages
    loaded = users.find("u3", key_id, ())
    assert loaded is not None and loaded.record_id == made[3].record_id
    assert loaded.expires_at == pytest.approx(made[3].expires_at)
    assert (loaded.cost_limit_in_usd, loaded.rate_limit_over_time) == (2.0, 3)
    assert loaded.allowed_paths == {("POST", CHAT)} and loaded.allowed_models == {"gpt-4o"}
    assert users.find("u3", str(uuid.uuid4()), ("other", tag)) is loaded

    await store.update(made[0].record_id, {"revoked": True, "keyIds": []})
    await store.delete(made[1].record_id)
    await refresher.refresh()
    assert users.find("u0", key_id, ()) is None  # no longer listed by key
    revoked = users.find("u0", "", (tag,))
    assert revoked is not None and revoked.revoked
    assert users.find("u1", key_id, (tag,)) is None and users.by_id(made[1].record_id) is None


async def test_key_and_user_refreshers_take_turns_on_one_connection(
    engine: AsyncEngine, database: LazyConnection, settings: Settings
) -> None:
    await UserStore(KeyStore(engine, settings.postgres)).create({"userId": "turns"})
    errors = errors_counter()
    keys = SnapshotRefresher(database, KeySnapshot(), 1, errors, KEYS)
    users = SnapshotRefresher(database, UserSnapshot(), 1, errors, USERS)
    for _ in range(20):
        await asyncio.gather(keys.refresh(), users.refresh(), keys.reload([]), users.reload([]))
