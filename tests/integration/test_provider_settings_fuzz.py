"""Random JSON bodies for provider settings, and for a key's setting fields, never get a 5xx."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.config import Settings
from shared.setting_schemas import COST_MAPS, PROVIDERS, SettingFieldsSchema
from tests.integration.test_keymgmt_fuzz import fuzz, json_values

SETTINGS = "/api/provider-settings"

values = json_values | st.sampled_from(
    ["http://h", "https://h/v1", "ftp://h", "http://", "https://u@h", "r", "..", "2024-10-21"]
)
setting_objects = st.dictionaries(
    st.sampled_from(list(SettingFieldsSchema().fields)) | st.text(max_size=8), values, max_size=5
)
cost_maps = st.dictionaries(
    st.sampled_from(COST_MAPS) | st.text(max_size=8),
    st.dictionaries(st.text(max_size=10), values, max_size=3) | values,
    max_size=3,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "provider": st.sampled_from(PROVIDERS) | values,
        "name": st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True) | values,
        "setting": setting_objects | values,
        "allowedModels": st.lists(values, max_size=3) | values,
        "costMap": cost_maps | values,
    },
) | st.dictionaries(st.text(max_size=10), values, max_size=4)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@fuzz
@given(body=bodies)
async def test_random_setting_bodies_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    response = await client.put(SETTINGS, json=body)
    assert response.status in (200, 400, 409), await response.text()


@fuzz
@given(body=bodies | json_values)
async def test_random_setting_patches_never_5xx(client: TestClient, body: Any) -> None:
    created = await client.put(
        SETTINGS,
        json={"provider": "vllm", "name": f"f-{uuid.uuid4().hex}", "setting": {"url": "http://h"}},
    )
    setting_id = (await created.json())["id"]
    response = await client.patch(f"{SETTINGS}/{setting_id}", json=body)
    assert response.status in (200, 400, 409), await response.text()


key_bodies = st.fixed_dictionaries(
    {},
    optional={
        "settingId": st.just(str(uuid.uuid4())) | values,
        "settingIds": st.lists(st.just(str(uuid.uuid4())) | values, max_size=3) | values,
        "rotationEnabled": values,
    },
)


@fuzz
@given(body=key_bodies)
async def test_random_key_setting_fields_never_5xx(client: TestClient, body: Any) -> None:
    response = await client.put(
        "/api/key-management/keys", json={"name": "f", "key": f"sk-{uuid.uuid4()}", **body}
    )
    assert response.status in (200, 400), await response.text()
