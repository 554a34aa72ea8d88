"""Routes in the proxy's snapshot: paged load, changes, deletions, and the change feed bringing
each keymgmt write to a running proxy within a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.app import create_app as create_keymgmt
from keymgmt.route_store import RouteStore
from proxy import snapshot as snapshot_module
from proxy.app import create_app as create_proxy
from proxy.routes.model import Route, Step
from proxy.routes.snapshot import ROUTE_SOURCE, RouteSnapshot
from proxy.snapshot import SnapshotRefresher
from proxy.typedefs import ROUTES
from shared.config import Settings
from shared.pg import LazyConnection
from shared.route_schemas import CreateRouteSchema
from tests.integration.test_routes_api import new_route
from tests.integration.test_snapshot import errors_counter

BOUND = 1.0  # CONTRACT, "Propagation"


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[LazyConnection]:
    database = LazyConnection(settings.postgres)
    yield database
    await database.close()


def loaded(**fields: Any) -> dict[str, Any]:
    return CreateRouteSchema().load(new_route(**fields))  # type: ignore[no-any-return]


async def test_full_load_in_pages_then_changes(
    engine: AsyncEngine,
    database: LazyConnection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RouteStore(engine, settings.postgres)
    created = [await store.create(loaded()) for _ in range(5)]
    monkeypatch.setattr(snapshot_module, "PAGE", 2)
    routes = RouteSnapshot()
    refresher = SnapshotRefresher(
        database, routes, interval=1, errors=errors_counter(), source=ROUTE_SOURCE
    )
    await refresher.refresh()
    assert routes.loaded
    for route in created:
        held = routes.get(route["path"])
        assert held is not None and held.route_id == route["id"]

    moved_path = f"/moved-{uuid.uuid4().hex[:8]}/chat/completions"
    await store.update(created[0]["id"], {"path": moved_path, "retryStrategy": "exponential"})
    await store.delete(created[1]["id"])
    await refresher.refresh()
    assert routes.get(created[0]["path"]) is None
    moved = routes.get(moved_path)
    assert moved is not None and moved.exponential_backoff
    assert routes.get(created[1]["path"]) is None
    assert routes.by_id(created[1]["id"]) is None


async def test_the_stored_shape_is_parsed_with_durations_in_seconds(
    engine: AsyncEngine, database: LazyConnection, settings: Settings
) -> None:
    key_id, setting_id, claude_id = (str(uuid.uuid4()) for _ in range(3))
    async with engine.begin() as connection:
        for each, provider in ((setting_id, "azure"), (claude_id, "anthropic")):
            await connection.exec_driver_sql(
                "INSERT INTO provider_settings (setting_id, provider, name, created_at, updated_at)"
                f" VALUES ('{each}', '{provider}', '{each}', now(), now())"
            )
        await connection.exec_driver_sql(
            "INSERT INTO keys (key_id, key_hash, name, setting_ids, created_at, updated_at)"
            f" VALUES ('{key_id}', '{uuid.uuid4().hex}', 'k',"
            f" ARRAY['{setting_id}', '{claude_id}']::uuid[], now(), now())"
        )
    fields = loaded(
        keyIds=[key_id],
        steps=[
            {
                "provider": "azure",
                "model": "gpt-4o",
                "settingId": setting_id,
                "retries": 2,
                "retryInterval": "250ms",
                "timeout": "1m30s",
                "params": {"apiVersion": "2024-10-21"},
                "requestParams": {"max_tokens": 100},
            },
            {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        ],
        cacheConfig={"enabled": True, "ttl": "2h"},
        coolDown={"failures": 4, "period": "45s"},
    )
    created = await RouteStore(engine, settings.postgres).create(fields)
    routes = RouteSnapshot()
    refresher = SnapshotRefresher(
        database, routes, interval=1, errors=errors_counter(), source=ROUTE_SOURCE
    )
    await refresher.refresh()
    route = routes.get(created["path"])
    assert route == Route(
        route_id=created["id"],
        path=created["path"],
        key_ids=frozenset({key_id}),
        steps=(
            Step("azure", "gpt-4o", setting_id, 2, 0.25, 90.0, {"max_tokens": 100},
                 {"apiVersion": "2024-10-21"}),
            Step("anthropic", "claude-sonnet-4-5", None, 0, 1.0, None, {}),
        ),
        exponential_backoff=False,
        cache_enabled=True,
        cache_ttl=7200.0,
        cool_down_failures=4,
        cool_down_period=45.0,
        updated_at=route.updated_at if route else 0.0,
    )  # fmt: skip
    assert route is not None and route.allows(key_id) and not route.allows(str(uuid.uuid4()))
    with pytest.raises(TypeError):
        route.steps[0].request_params["max_tokens"] = 1  # type: ignore[index]


async def test_an_unreadable_row_is_not_served_and_holds_nothing_back(
    engine: AsyncEngine, database: LazyConnection, settings: Settings
) -> None:
    store = RouteStore(engine, settings.postgres)
    broken, fine = await store.create(loaded()), await store.create(loaded())
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            f"UPDATE routes SET steps = '[{{\"model\": 1}}]' WHERE route_id = '{broken['id']}'"
        )
    routes = RouteSnapshot()
    refresher = SnapshotRefresher(
        database, routes, interval=1, errors=errors_counter(), source=ROUTE_SOURCE
    )
    await refresher.refresh()
    assert routes.get(broken["path"]) is None
    assert routes.get(fine["path"]) is not None


async def until(condition: Callable[[], bool], within: float = BOUND) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.01)


async def test_keymgmt_writes_reach_a_running_proxy_within_a_second(
    aiohttp_client: Any, settings: Settings
) -> None:
    keymgmt: TestClient = await aiohttp_client(create_keymgmt(settings))
    # The periodic refresh a minute away: only the change feed can bring a change in time.
    proxy: TestClient = await aiohttp_client(create_proxy(replace(settings, snapshot_interval=60)))
    routes = proxy.app[ROUTES]
    await until(lambda: routes.loaded, within=30)

    body = new_route()
    created = await (await keymgmt.post("/api/routes", json=body)).json()
    await until(lambda: routes.get(body["path"]) is not None)

    new_path = f"/renamed-{uuid.uuid4().hex[:8]}/chat/completions"
    steps = [{"provider": "openai", "model": "gpt-4o-mini", "retries": 3}]
    response = await keymgmt.patch(
        f"/api/routes/{created['id']}", json={"path": new_path, "steps": steps}
    )
    assert response.status == 200

    def changed() -> bool:
        route = routes.get(new_path)
        return route is not None and route.steps[0].retries == 3

    await until(changed)
    assert routes.get(body["path"]) is None

    assert (await keymgmt.delete(f"/api/routes/{created['id']}")).status == 204
    await until(lambda: routes.get(new_path) is None)
