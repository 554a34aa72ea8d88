"""`make demo`'s provider settings and key, made through a real keymgmt: made again at every
start, pointing at that run's fake upstream (the key un-revoked), and refused in one line when
a setting of another provider holds one of the demo's names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import demo  # deploy/local, on the path by tests/conftest.py
import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from shared.config import Settings
from tests.conftest import Endpoint, _admin, with_admin_pass

ADMIN_PASS = "demo-admin-pass"
DEMO_NAMES = {"demo-openai", "demo-anthropic", "demo-azure", "demo-vllm", "local"}


@pytest.fixture
async def keymgmt(
    aiohttp_client: Any, settings: Settings, postgres_endpoint: Endpoint
) -> AsyncIterator[TestClient]:
    """keymgmt on an empty database of its own: the demo's names are fixed."""
    name = f"gateway_demo_{uuid.uuid4().hex[:12]}"
    await _admin(postgres_endpoint, f'CREATE DATABASE "{name}"')
    own = replace(settings, postgres=replace(settings.postgres, db_name=name))
    client: TestClient = await aiohttp_client(create_app(with_admin_pass(own, ADMIN_PASS)))
    client.session.headers["X-API-KEY"] = ADMIN_PASS
    yield client
    await client.close()
    await _admin(postgres_endpoint, f'DROP DATABASE "{name}" WITH (FORCE)')


async def provision(keymgmt: TestClient, upstream_root: str) -> None:
    url = str(keymgmt.make_url("")).rstrip("/")
    await asyncio.to_thread(demo.provision, url, upstream_root, ADMIN_PASS)


async def read(keymgmt: TestClient, path: str) -> Any:
    response = await keymgmt.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_each_start_points_the_same_settings_and_key_at_its_upstream(
    keymgmt: TestClient,
) -> None:
    await provision(keymgmt, "http://127.0.0.1:9000")
    first = {s["name"]: s for s in await read(keymgmt, "/api/provider-settings")}
    [key] = await read(keymgmt, f"/api/key-management/keys?tag={demo.DEMO_TAG}")
    response = await keymgmt.patch(
        f"/api/key-management/keys/{key['keyId']}", json={"revoked": True}
    )
    assert response.status == 200, await response.text()
    await provision(keymgmt, "http://127.0.0.1:9123")

    settings = {s["name"]: s for s in await read(keymgmt, "/api/provider-settings")}
    assert set(settings) == DEMO_NAMES
    assert {n: s["id"] for n, s in settings.items()} == {n: s["id"] for n, s in first.items()}
    assert {n: s["provider"] for n, s in settings.items()} == {
        "demo-openai": "openai",
        "demo-anthropic": "anthropic",
        "demo-azure": "azure",
        "demo-vllm": "vllm",
        "local": "openai_compatible",
    }
    urls = {
        value
        for s in settings.values()
        for field, value in s["setting"].items()
        if field in ("baseUrl", "url", "endpoint")
    }
    assert urls == {"http://127.0.0.1:9123", "http://127.0.0.1:9123/v1"}
    [again] = await read(keymgmt, f"/api/key-management/keys?tag={demo.DEMO_TAG}")
    assert (again["keyId"], again["revoked"]) == (key["keyId"], False)
    assert sorted(again["settingIds"]) == sorted(s["id"] for s in settings.values())


async def test_a_setting_of_another_provider_under_a_demo_name_is_named_in_the_error(
    keymgmt: TestClient,
) -> None:
    foreign = {"provider": "vllm", "name": "demo-openai", "setting": {"url": "http://vllm:8000"}}
    response = await keymgmt.put("/api/provider-settings", json=foreign)
    assert response.status == 200, await response.text()
    with pytest.raises(demo.DemoSetupError, match="a vllm setting is named 'demo-openai'"):
        await provision(keymgmt, "http://127.0.0.1:9000")
