"""The users API against a real Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.config import Settings
from tests.integration.test_keymgmt_api import assert_problem

USERS = "/api/users"
CHAT = "/api/providers/openai/v1/chat/completions"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.post(USERS, json={"userId": f"u-{uuid.uuid4().hex}", **fields})
    body = await response.json()
    assert response.status == 200, body
    return body  # type: ignore[no-any-return]


async def test_create_find_patch_delete(client: TestClient) -> None:
    key_id, tag = str(uuid.uuid4()), uuid.uuid4().hex
    user = await create(
        client,
        name="Alice",
        tags=[tag],
        keyIds=[key_id, key_id],
        costLimitInUsd=2.5,
        costLimitInUsdOverTime="1",
        costLimitInUsdUnit="d",
        rateLimitOverTime=10,
        rateLimitUnit="m",
        ttl="1h",
        allowedPaths=[{"path": CHAT, "method": "POST"}],
        allowedModels=["gpt-4o-mini"],
    )
    assert uuid.UUID(user["id"])
    assert (user["name"], user["tags"], user["keyIds"]) == ("Alice", [tag], [key_id])
    assert (user["costLimitInUsd"], user["costLimitInUsdOverTime"]) == (2.5, 1.0)
    assert (user["rateLimitOverTime"], user["rateLimitUnit"], user["ttl"]) == (10, "m", "1h")
    assert user["expiresAt"] == user["createdAt"] + 3600
    assert user["allowedPaths"] == [{"path": CHAT, "method": "POST"}]
    assert user["allowedModels"] == ["gpt-4o-mini"]
    assert user["revoked"] is False

    for query in (f"tags={tag}", f"keyIds={key_id}", f"userIds={user['userId']}"):
        found = await (await client.get(f"{USERS}?{query}")).json()
        assert [u["id"] for u in found] == [user["id"]], query

    path = f"{USERS}/{user['id']}"
    response = await client.patch(path, json={"revoked": True, "revokedReason": "left",
                                              "costLimitInUsd": None})  # fmt: skip
    patched = await response.json()
    assert response.status == 200, patched
    assert (patched["revoked"], patched["revokedReason"], patched["costLimitInUsd"]) == (
        True, "left", 0.0,
    )  # fmt: skip
    assert patched["rateLimitOverTime"] == 10
    assert patched["updatedAt"] >= user["updatedAt"]

    assert (await client.delete(path)).status == 204
    assert await (await client.get(f"{USERS}?tags={tag}")).json() == []
    response = await client.patch(path, json={"name": "gone"})
    assert_problem(await response.json(), 404, path)
    assert (await client.delete(path)).status == 404


async def test_paging_and_no_filter(client: TestClient) -> None:
    tag = uuid.uuid4().hex
    made = [await create(client, tags=[tag]) for _ in range(3)]
    page = await (await client.get(f"{USERS}?tags={tag}&offset=1&limit=1")).json()
    assert [u["id"] for u in page] == [made[1]["id"]]
    assert len(await (await client.get(f"{USERS}?limit=2")).json()) == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"userId": ""},
        {"userId": 5},
        {"userId": "a", "keyIds": ["not-a-uuid"]},
        {"userId": "a", "costLimitInUsd": -1},
        {"userId": "a", "costLimitInUsdOverTime": 1},
        {"userId": "a", "rateLimitUnit": "w", "rateLimitOverTime": 1},
        {"userId": "a", "ttl": "soon"},
        {"userId": "a", "allowedPaths": [{"path": "x", "method": "POST"}]},
        {"userId": "a", "revoked": "yes"},
        {"userId": "a", "rateLimits": []},  # a key's field only
        {"userId": "a", "unknown": 1},
    ],
)
async def test_bad_bodies_are_400(client: TestClient, body: dict[str, Any]) -> None:
    response = await client.post(USERS, json=body)
    assert_problem(await response.json(), 400, USERS)


async def test_bad_patches_queries_and_ids(client: TestClient) -> None:
    user = await create(client, costLimitInUsdOverTime=1, costLimitInUsdUnit="h")
    path = f"{USERS}/{user['id']}"
    response = await client.patch(path, json={"costLimitInUsdUnit": None})
    assert_problem(await response.json(), 400, path)
    for query in ("limit=0", "limit=x", "offset=-1", "keyIds=nope", "limit=99999999999999"):
        response = await client.get(f"{USERS}?{query}")
        assert_problem(await response.json(), 400, USERS)
    for bad in ("nope", str(uuid.uuid4())):
        response = await client.patch(f"{USERS}/{bad}", json={})
        assert_problem(await response.json(), 404, f"{USERS}/{bad}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
FIELDS = ["userId", "name", "tags", "keyIds", "costLimitInUsd", "rateLimitOverTime",
          "rateLimitUnit", "ttl", "allowedPaths", "allowedModels", "revoked"]  # fmt: skip


@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
async def test_random_bodies_are_200_or_a_problem(client: TestClient, body: Any) -> None:
    response = await client.post(USERS, json=body)
    if response.status != 200:
        assert_problem(await response.json(), 400, USERS)
    else:
        user = await response.json()
        response = await client.patch(f"{USERS}/{user['id']}", json=body)
        assert response.status in (200, 400), await response.text()
