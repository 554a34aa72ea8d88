"""Random JSON bodies for create and update never get a 5xx."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.config import Settings
from shared.schemas import KeySchema

FIELDS = ["key", "revoked", "revokedReason", *KeySchema().fields]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.sampled_from(["1", "1.5", "-2", "m", "s", "h", "d", "2d", "1h30m", "", "nan"]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=8)

fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@fuzz
@given(body=bodies)
async def test_random_create_bodies_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    response = await client.put("/api/key-management/keys", json=body)
    assert response.status in (200, 400, 409), await response.text()


@fuzz
@given(body=bodies | json_values)
async def test_random_update_bodies_never_5xx(client: TestClient, body: Any) -> None:
    created = await client.put(
        "/api/key-management/keys", json={"name": "fuzz", "key": f"sk-fuzz-{uuid.uuid4()}"}
    )
    key_id = (await created.json())["keyId"]
    response = await client.patch(f"/api/key-management/keys/{key_id}", json=body)
    assert response.status in (200, 400), await response.text()


@fuzz
@given(payload=st.binary(max_size=200))
async def test_random_bytes_never_5xx(client: TestClient, payload: bytes) -> None:
    response = await client.put("/api/key-management/keys", data=payload)
    assert response.status in (200, 400, 409), await response.text()
