"""The proxy's provider settings against Postgres: loaded in pages, kept current by the change
feed within a second, secrets opened only with the right key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.settings_store import SettingStore
from keymgmt.store import KeyStore
from proxy import snapshot as snapshot_module
from proxy.changefeed import ChangeFeed, FeedMetrics
from proxy.provider_settings import SettingSnapshot, setting_source
from proxy.snapshot import KeySnapshot, SnapshotRefresher
from shared.changes import KEY, SETTING
from shared.config import Settings
from shared.metrics import Metrics
from shared.models import hash_key
from shared.pg import LazyConnection, connect
from shared.runtime import stop_task
from shared.secrets import SecretBox
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.integration.test_changefeed import until
from tests.integration.test_snapshot import errors_counter


def setting_fields(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": "openai",
        "name": f"snap-{uuid.uuid4().hex[:12]}",
        "setting": {"apikey": f"sk-clear-{uuid.uuid4().hex}", "baseUrl": "https://a.example/v1"},
    }
    return body | fields


@pytest.fixture
def store(engine: AsyncEngine, settings: Settings) -> SettingStore:
    return SettingStore(engine, settings.postgres, SecretBox(TEST_ENCRYPTION_KEY))


@dataclass
class Proxy:
    keys: KeySnapshot
    settings: SettingSnapshot


@contextlib.asynccontextmanager
async def follow(settings: Settings) -> AsyncIterator[Proxy]:
    """Both snapshots as a proxy holds them, kept current by the change feed alone."""
    metrics = Metrics()
    errors = metrics.counter("errors_total", "errors", ("operation",))
    database = LazyConnection(settings.postgres)
    proxy = Proxy(KeySnapshot(), SettingSnapshot())
    source = setting_source(SecretBox(TEST_ENCRYPTION_KEY))
    reloaders: dict[str, SnapshotRefresher[Any]] = {
        KEY: SnapshotRefresher(database, proxy.keys, 3600, errors),
        SETTING: SnapshotRefresher(database, proxy.settings, 3600, errors, source),
    }
    feed = ChangeFeed(settings.postgres, reloaders, FeedMetrics.register(metrics, errors))
    task = asyncio.create_task(feed.run())
    await until(lambda: feed.listening, 10, "listening")
    yield proxy
    await stop_task(task)
    await database.close()


async def test_settings_and_a_keys_setting_ids_arrive_within_a_second(
    engine: AsyncEngine, settings: Settings, store: SettingStore
) -> None:
    async with follow(settings) as proxy:
        fields = setting_fields(
            allowedModels=["gpt-4o"], costMap={"promptCostPerModel": {"gpt-4o": 0.0025}}
        )
        created = await store.create(fields)
        await until(lambda: proxy.settings.by_id(created.setting_id) is not None, 1, "created")
        held = proxy.settings.by_id(created.setting_id)
        assert held is not None and proxy.settings.by_name(created.name) is held
        assert (held.provider, held.secret) == ("openai", fields["setting"]["apikey"])
        assert held.options == {"baseUrl": "https://a.example/v1"}
        assert held.allowed_models == frozenset({"gpt-4o"})
        assert held.cost_map["promptCostPerModel"] == {"gpt-4o": 0.0025}
        assert held.allows("gpt-4o") and not held.allows("gpt-4")
        assert fields["setting"]["apikey"] not in repr(held)

        other = await store.create(setting_fields(provider="vllm", setting={"url": "http://v"}))
        raw = f"sk-snap-{uuid.uuid4().hex}"
        key = await KeyStore(engine, settings.postgres).create(
            {"name": "k", "key": raw, "settingIds": [other.setting_id, created.setting_id],
             "rotationEnabled": True}
        )  # fmt: skip
        await until(lambda: proxy.keys.get(hash_key(raw)) is not None, 1, "the key")
        held_key = proxy.keys.get(hash_key(raw))
        assert held_key is not None
        assert held_key.setting_ids == (other.setting_id, created.setting_id)
        assert held_key.rotation_enabled
        await KeyStore(engine, settings.postgres).update(key.key_id, {"settingIds": []})
        await until(
            lambda: getattr(proxy.keys.get(hash_key(raw)), "setting_ids", None) == (), 1, "cleared"
        )

        clear = f"sk-new-{uuid.uuid4().hex}"
        await store.update(created.setting_id, {"name": "renamed-" + created.name[5:],
                                                "setting": {"apikey": clear}})  # fmt: skip
        await until(
            lambda: getattr(proxy.settings.by_id(created.setting_id), "secret", "") == clear,
            1,
            "changed",
        )
        assert proxy.settings.by_name(created.name) is None
        assert proxy.settings.by_name("renamed-" + created.name[5:]) is not None
        await store.delete(created.setting_id)
        await until(lambda: proxy.settings.by_id(created.setting_id) is None, 1, "deleted")
        assert proxy.settings.by_id(other.setting_id) is not None


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[LazyConnection]:
    database = LazyConnection(settings.postgres)
    yield database
    await database.close()


async def test_full_load_in_pages_then_changes(
    store: SettingStore, database: LazyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = [await store.create(setting_fields()) for _ in range(5)]
    monkeypatch.setattr(snapshot_module, "PAGE", 2)
    held = SettingSnapshot()
    source = setting_source(SecretBox(TEST_ENCRYPTION_KEY))
    refresher = SnapshotRefresher(database, held, 1, errors_counter(), source)
    await refresher.refresh()
    assert held.loaded
    assert all(held.by_id(setting.setting_id) for setting in created)
    await store.delete(created[0].setting_id)
    await refresher.refresh()
    assert held.by_id(created[0].setting_id) is None


async def test_without_the_key_settings_with_a_secret_are_skipped_with_one_warning(
    store: SettingStore, database: LazyConnection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sealed = await store.create(setting_fields())
    open_one = await store.create(setting_fields(provider="vllm", setting={"url": "http://v"}))
    held = SettingSnapshot()
    refresher = SnapshotRefresher(database, held, 1, errors_counter(), setting_source(None))
    for _ in range(3):  # each incremental refresh re-reads the recent rows
        await refresher.refresh()
    assert held.by_id(sealed.setting_id) is None
    assert held.by_id(open_one.setting_id) is not None
    warnings = [r for r in caplog.records if sealed.setting_id == getattr(r, "setting_id", "")]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "SETTINGS_ENCRYPTION_KEY" in warnings[0].getMessage()


async def test_a_changed_or_moved_secret_is_not_used(
    store: SettingStore, settings: Settings, database: LazyConnection
) -> None:
    first, second = await store.create(setting_fields()), await store.create(setting_fields())
    held = SettingSnapshot()
    source = setting_source(SecretBox(TEST_ENCRYPTION_KEY))
    refresher = SnapshotRefresher(database, held, 1, errors_counter(), source)
    await refresher.refresh()
    assert held.by_id(first.setting_id) and held.by_id(second.setting_id)
    connection = await connect(settings.postgres)
    try:
        # first's sealed secret copied onto second; first's own flipped in one byte
        await connection.execute(
            "UPDATE provider_settings SET updated_at = now(), secret = ("
            " SELECT secret FROM provider_settings WHERE setting_id = $1) WHERE setting_id = $2",
            first.setting_id, second.setting_id,
        )  # fmt: skip
        await connection.execute(
            "UPDATE provider_settings SET updated_at = now(),"
            " secret = set_byte(secret, 20, get_byte(secret, 20) # 1) WHERE setting_id = $1",
            first.setting_id,
        )
    finally:
        await connection.close()
    await refresher.refresh()
    assert held.by_id(first.setting_id) is None
    assert held.by_id(second.setting_id) is None


async def test_another_key_opens_nothing(store: SettingStore, database: LazyConnection) -> None:
    created = await store.create(setting_fields())
    held = SettingSnapshot()
    source = setting_source(SecretBox(os.urandom(32)))
    await SnapshotRefresher(database, held, 1, errors_counter(), source).refresh()
    assert held.loaded and held.by_id(created.setting_id) is None
