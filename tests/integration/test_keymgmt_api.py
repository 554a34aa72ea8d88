"""The key-management API against a real Postgres."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from shared.config import Settings
from tests.conftest import with_admin_pass

KEYS = "/api/key-management/keys"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def db(settings: Settings) -> Any:
    pg = settings.postgres
    connection = await asyncpg.connect(
        host=pg.hosts[0], port=pg.port, user=pg.username, database=pg.db_name
    )
    yield connection
    await connection.close()


def new_key(**fields: Any) -> dict[str, Any]:
    body = {"name": "team-a", "key": f"sk-{uuid.uuid4().hex}", "tags": [uuid.uuid4().hex]}
    body.update(fields)
    return body


async def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.put(KEYS, json=new_key(**fields))
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


def assert_problem(body: dict[str, Any], status: int, path: str) -> None:
    assert set(body) == {"status", "title", "type", "detail", "instance"}
    assert body["status"] == status
    assert body["instance"] == path


async def test_create_returns_configuration_without_the_raw_key(
    client: TestClient, db: Any
) -> None:
    body = new_key(
        costLimitInUsd=25.5,
        costLimitInUsdOverTime="2.5",
        costLimitInUsdUnit="d",
        rateLimitOverTime="100",
        rateLimitUnit="m",
        ttl="2d",
    )
    response = await client.put(KEYS, json=body)
    assert response.status == 200
    key = await response.json()
    assert body["key"] not in await response.text()
    assert uuid.UUID(key["keyId"])
    assert key["name"] == "team-a"
    assert key["tags"] == body["tags"]
    assert (key["costLimitInUsd"], key["costLimitInUsdOverTime"], key["costLimitInUsdUnit"]) == (
        25.5,
        2.5,
        "d",
    )
    assert (key["rateLimitOverTime"], key["rateLimitUnit"]) == (100, "m")
    assert key["ttl"] == "2d"
    assert key["expiresAt"] == key["createdAt"] + 2 * 86400
    assert key["revoked"] is False
    stored = await db.fetchval(
        "SELECT key_hash FROM keys WHERE key_id = $1", uuid.UUID(key["keyId"])
    )
    assert stored == hashlib.sha256(body["key"].encode()).hexdigest()


async def test_duplicate_key_is_a_conflict(client: TestClient) -> None:
    body = new_key()
    assert (await client.put(KEYS, json=body)).status == 200
    response = await client.put(KEYS, json=body | {"name": "again"})
    assert response.status == 409
    assert_problem(await response.json(), 409, KEYS)


async def test_get_one_and_find_by_tag_tags_and_ids(client: TestClient) -> None:
    shared_tag = uuid.uuid4().hex
    first = await create(client, tags=[shared_tag, "x"])
    second = await create(client, tags=[shared_tag])
    other = await create(client)

    response = await client.get(f"{KEYS}/{first['keyId']}")
    assert response.status == 200
    assert await response.json() == first

    by_tag = await (await client.get(KEYS, params={"tag": shared_tag})).json()
    assert {k["keyId"] for k in by_tag} == {first["keyId"], second["keyId"]}
    by_tags = await (
        await client.get(KEYS, params=[("tags", other["tags"][0]), ("tags", second["tags"][0])])
    ).json()
    assert {k["keyId"] for k in by_tags} == {first["keyId"], second["keyId"], other["keyId"]}
    by_ids = await (
        await client.get(KEYS, params=[("keyIds", first["keyId"]), ("keyIds", other["keyId"])])
    ).json()
    assert {k["keyId"] for k in by_ids} == {first["keyId"], other["keyId"]}


async def test_patch_changes_only_named_fields_and_moves_updated_at(
    client: TestClient, db: Any
) -> None:
    key = await create(client, rateLimitOverTime=10, rateLimitUnit="s", costLimitInUsd=5)
    key_uuid = uuid.UUID(key["keyId"])
    before = await db.fetchval("SELECT updated_at FROM keys WHERE key_id = $1", key_uuid)
    response = await client.patch(
        f"{KEYS}/{key['keyId']}",
        json={"revoked": True, "revokedReason": "leaked", "rateLimitOverTime": 3},
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["revoked"] is True
    assert updated["revokedReason"] == "leaked"
    assert updated["rateLimitOverTime"] == 3
    unchanged = {
        k: v
        for k, v in key.items()
        if k not in ("revoked", "revokedReason", "rateLimitOverTime", "updatedAt")
    }
    assert {k: updated[k] for k in unchanged} == unchanged
    after = await db.fetchval("SELECT updated_at FROM keys WHERE key_id = $1", key_uuid)
    assert after > before


async def test_patch_can_clear_a_limit_pair_and_change_ttl(client: TestClient) -> None:
    key = await create(client, rateLimitOverTime=10, rateLimitUnit="s")
    cleared = await (
        await client.patch(
            f"{KEYS}/{key['keyId']}", json={"rateLimitOverTime": None, "rateLimitUnit": None}
        )
    ).json()
    assert (cleared["rateLimitOverTime"], cleared["rateLimitUnit"]) == (0, "")
    extended = await (await client.patch(f"{KEYS}/{key['keyId']}", json={"ttl": "1h"})).json()
    assert extended["expiresAt"] == key["createdAt"] + 3600


async def test_delete_leaves_a_tombstone(client: TestClient, db: Any) -> None:
    key = await create(client)
    response = await client.delete(f"{KEYS}/{key['keyId']}")
    assert response.status == 204
    assert (await client.get(f"{KEYS}/{key['keyId']}")).status == 404
    assert (await client.delete(f"{KEYS}/{key['keyId']}")).status == 404
    assert await (await client.get(KEYS, params={"tag": key["tags"][0]})).json() == []
    row = await db.fetchrow(
        "SELECT deleted_at, updated_at FROM keys WHERE key_id = $1", uuid.UUID(key["keyId"])
    )
    assert row["deleted_at"] is not None
    assert row["updated_at"] == row["deleted_at"]


async def test_a_deleted_key_value_can_be_created_again(client: TestClient) -> None:
    body = new_key()
    first = await (await client.put(KEYS, json=body)).json()
    await client.delete(f"{KEYS}/{first['keyId']}")
    second = await client.put(KEYS, json=body)
    assert second.status == 200
    assert (await second.json())["keyId"] != first["keyId"]


BAD_CREATES = {
    "wrong type": {"name": 12},
    "wrong type for tags": {"tags": "a"},
    "boolean limit": {"costLimitInUsd": True},
    "unknown unit": {"rateLimitOverTime": 5, "rateLimitUnit": "w"},
    "negative limit": {"costLimitInUsd": -1},
    "negative windowed limit": {"costLimitInUsdOverTime": -1, "costLimitInUsdUnit": "h"},
    "half-given rate limit": {"rateLimitOverTime": 5},
    "half-given cost limit": {"costLimitInUsdUnit": "h"},
    "non-numeric string": {"rateLimitOverTime": "many", "rateLimitUnit": "m"},
    "fractional rate": {"rateLimitOverTime": 1.5, "rateLimitUnit": "m"},
    "unknown field": {"owner": "me"},
    "oversized name": {"name": "n" * 257},
    "oversized tag": {"tags": ["t" * 257]},
    "too many tags": {"tags": [str(i) for i in range(65)]},
    "bad ttl": {"ttl": "forever"},
    "NUL in name": {"name": "a\x00b"},
    "empty key": {"key": ""},
}


@pytest.mark.parametrize("fields", BAD_CREATES.values(), ids=BAD_CREATES.keys())
async def test_bad_create_is_400(client: TestClient, fields: dict[str, Any]) -> None:
    response = await client.put(KEYS, json=new_key(**fields))
    assert response.status == 400
    body = await response.json()
    assert_problem(body, 400, KEYS)
    assert isinstance(body["detail"], dict)


@pytest.mark.parametrize(
    "payload",
    [b"{", b"[]", b'"text"', b"\xff\xfe", b'{"name": "a", "key": "b",}'],
    ids=["truncated", "array", "string", "not utf-8", "trailing comma"],
)
async def test_malformed_json_is_400(client: TestClient, payload: bytes) -> None:
    response = await client.put(KEYS, data=payload, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert_problem(await response.json(), 400, KEYS)


async def test_missing_name_is_400(client: TestClient) -> None:
    response = await client.put(KEYS, json={"key": "sk-x"})
    assert response.status == 400
    assert "name" in (await response.json())["detail"]


async def test_patch_leaving_a_half_pair_is_400(client: TestClient) -> None:
    key = await create(client, rateLimitOverTime=10, rateLimitUnit="s")
    path = f"{KEYS}/{key['keyId']}"
    response = await client.patch(path, json={"rateLimitUnit": None})
    assert response.status == 400
    assert_problem(await response.json(), 400, path)
    assert (await (await client.get(path)).json())["rateLimitUnit"] == "s"
    assert (await client.patch(path, json={"key": "sk-new"})).status == 400


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize("key_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_unknown_or_malformed_id_is_404(client: TestClient, method: str, key_id: str) -> None:
    path = f"{KEYS}/{key_id}"
    response = await client.request(method, path, json={"name": "x"})
    assert response.status == 404
    assert_problem(await response.json(), 404, path)


async def test_find_needs_a_filter_and_valid_ids(client: TestClient) -> None:
    for params in ({}, {"keyIds": "nope"}):
        response = await client.get(KEYS, params=params)
        assert response.status == 400
        assert_problem(await response.json(), 400, KEYS)


async def test_body_over_one_megabyte_is_413(client: TestClient) -> None:
    response = await client.put(KEYS, data=b'{"name": "' + b"a" * (1024 * 1024) + b'"}')
    assert response.status == 413
    assert_problem(await response.json(), 413, KEYS)


async def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = await client.get("/api/nothing-here")
    assert response.status == 404
    assert_problem(await response.json(), 404, "/api/nothing-here")


async def test_health_and_openapi(client: TestClient) -> None:
    health = await client.get("/api/health")
    assert health.status == 200
    assert (await health.json())["postgres"] is True
    document = await (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert {"put", "get"} <= set(document["paths"][KEYS])
    create_schema = document["components"]["schemas"]["CreateKey"]
    assert {"name", "key", "rateLimitUnit"} <= set(create_schema["properties"])
    assert create_schema["properties"]["name"]["maxLength"] == 256


@pytest.fixture
async def guarded(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(with_admin_pass(settings, "admin-secret")))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-KEY": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "admin-secret"},
    ],
    ids=["none", "wrong x-api-key", "wrong bearer", "no scheme"],
)
async def test_admin_pass_refuses_missing_or_wrong(
    guarded: TestClient, headers: dict[str, str]
) -> None:
    response = await guarded.put(KEYS, json=new_key(), headers=headers)
    assert response.status == 401
    body = await response.json()
    assert_problem(body, 401, KEYS)
    assert "admin-secret" not in await response.text()
    assert (await guarded.get("/api/openapi.json", headers=headers)).status == 401


@pytest.mark.parametrize(
    "headers", [{"X-API-KEY": "admin-secret"}, {"Authorization": "Bearer admin-secret"}]
)
async def test_admin_pass_accepts_either_header(
    guarded: TestClient, headers: dict[str, str]
) -> None:
    key = await (await guarded.put(KEYS, json=new_key(), headers=headers)).json()
    response = await guarded.get(f"{KEYS}/{key['keyId']}", headers=headers)
    assert response.status == 200


async def test_health_is_open_with_admin_pass(guarded: TestClient) -> None:
    assert (await guarded.get("/api/health")).status == 200
