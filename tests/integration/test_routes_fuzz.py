"""Random JSON bodies for route create and update never get a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.config import Settings
from shared.route_schemas import CreateRouteSchema, StepSchema
from tests.integration.test_keymgmt_fuzz import fuzz, json_values
from tests.integration.test_routes_api import ROUTES, create_route

ROUTE_FIELDS = list(CreateRouteSchema().fields)
STEP_FIELDS = list(StepSchema().fields)

steps = st.lists(
    st.dictionaries(
        st.sampled_from(STEP_FIELDS),
        json_values
        | st.sampled_from(["openai", "azure", "anthropic", "gpt-4o", "1s", "0", "500ms"]),
        max_size=8,
    )
    | json_values,
    max_size=3,
)
bodies = st.dictionaries(
    st.sampled_from(ROUTE_FIELDS) | st.text(max_size=10),
    json_values | steps | st.sampled_from(["/a", "/a/../b", "/a//b", "constant"]),
    max_size=8,
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid route with one field, top-level or a step's, set to a random value."""
    step = {"provider": "azure", "model": "gpt-4o", "retries": 1, "timeout": "5s"}
    body: dict[str, Any] = {"name": "fuzz", "path": "/fuzz/chat", "steps": [step]}
    value = draw(json_values)
    if draw(st.booleans()):
        step[draw(st.sampled_from(STEP_FIELDS))] = value
    else:
        body[draw(st.sampled_from(ROUTE_FIELDS))] = value
    return body


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@fuzz
@given(body=bodies | near_valid())
async def test_random_create_bodies_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    response = await client.post(ROUTES, json=body)
    assert response.status in (200, 400, 409), await response.text()
    if response.status == 200:
        await client.delete(f"{ROUTES}/{(await response.json())['id']}")  # free the path


@fuzz
@given(body=bodies | near_valid() | json_values)
async def test_random_update_bodies_never_5xx(client: TestClient, body: Any) -> None:
    route = await create_route(client)
    response = await client.patch(f"{ROUTES}/{route['id']}", json=body)
    assert response.status in (200, 400, 409), await response.text()


@fuzz
@given(payload=st.binary(max_size=200))
async def test_random_bytes_never_5xx(client: TestClient, payload: bytes) -> None:
    response = await client.post(ROUTES, data=payload)
    assert response.status in (200, 400), await response.text()
