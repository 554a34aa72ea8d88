"""The routes API against a real Postgres: create, read, change, delete, and bad input."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from shared.changes import CHANNEL, ROUTE, parse_change
from shared.config import Settings
from tests.integration.test_keymgmt_api import assert_problem, create
from tests.integration.test_provider_settings_api import SETTINGS
from tests.integration.test_provider_settings_api import create as create_setting

ROUTES = "/api/routes"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


def new_route(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "team-a chat",
        "path": f"/team-{uuid.uuid4().hex[:8]}/chat/completions",
        "steps": [{"provider": "openai", "model": "gpt-4o"}],
    }
    body.update(fields)
    return body


async def create_route(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.post(ROUTES, json=new_route(**fields))
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_create_fills_every_default_and_reads_back(client: TestClient) -> None:
    key = await create(client)
    route = await create_route(client, keyIds=[key["keyId"].upper()])
    assert uuid.UUID(route["id"])
    assert route["keyIds"] == [key["keyId"]]  # canonical form
    assert route["steps"] == [
        {
            "provider": "openai",
            "model": "gpt-4o",
            "settingId": None,
            "retries": 0,
            "retryInterval": "1s",
            "timeout": None,
            "params": {},
            "requestParams": {},
        }
    ]
    assert route["retryStrategy"] == "constant"
    assert route["cacheConfig"] == {"enabled": False, "ttl": "1h"}
    assert route["coolDown"] == {"failures": 3, "period": "30s"}
    assert route["createdAt"] == route["updatedAt"] > 0
    fetched = await client.get(f"{ROUTES}/{route['id']}")
    assert fetched.status == 200
    assert await fetched.json() == route
    listed = await (await client.get(ROUTES)).json()
    assert route in listed


async def test_every_field_is_kept(client: TestClient) -> None:
    azure = {"apikey": "sk-a", "endpoint": "https://example.openai.azure.com"}
    setting_id = (await create_setting(client, provider="azure", setting=azure))["id"]
    steps = [
        {
            "provider": "azure",
            "model": "gpt-4o",
            "settingId": setting_id,
            "retries": 2,
            "retryInterval": "500ms",
            "timeout": "30s",
            "params": {"deploymentId": "prod-4o", "apiVersion": "2024-10-21"},
            "requestParams": {"max_tokens": 512, "response_format": {"type": "text"}},
        },
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "retries": "1"},
    ]
    route = await create_route(
        client,
        steps=steps,
        retryStrategy="exponential",
        cacheConfig={"enabled": True, "ttl": "7d"},
        coolDown={"failures": 5, "period": "2m"},
    )
    assert route["steps"][0] == steps[0]
    assert route["steps"][1]["retries"] == 1
    assert route["retryStrategy"] == "exponential"
    assert route["cacheConfig"] == {"enabled": True, "ttl": "7d"}
    assert route["coolDown"] == {"failures": 5, "period": "2m"}


async def test_patch_changes_only_what_it_names(client: TestClient) -> None:
    key = await create(client)
    route = await create_route(client, cacheConfig={"enabled": True, "ttl": "10m"})
    response = await client.patch(
        f"{ROUTES}/{route['id']}",
        json={"keyIds": [key["keyId"]], "cacheConfig": {"ttl": "2h"}, "coolDown": {"failures": 0}},
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["keyIds"] == [key["keyId"]]
    assert updated["cacheConfig"] == {"enabled": True, "ttl": "2h"}  # merged, not replaced
    assert updated["coolDown"] == {"failures": 0, "period": "30s"}
    assert updated["steps"] == route["steps"]
    assert updated["path"] == route["path"]
    assert updated["updatedAt"] >= route["updatedAt"]
    assert await (await client.get(f"{ROUTES}/{route['id']}")).json() == updated


async def test_delete_is_204_then_404(client: TestClient) -> None:
    route = await create_route(client)
    response = await client.delete(f"{ROUTES}/{route['id']}")
    assert response.status == 204
    for method in ("get", "patch", "delete"):
        gone = await client.request(method, f"{ROUTES}/{route['id']}", json={"name": "x"})
        assert gone.status == 404
        assert_problem(await gone.json(), 404, f"{ROUTES}/{route['id']}")
    assert route["id"] not in [each["id"] for each in await (await client.get(ROUTES)).json()]


async def test_a_deleted_routes_path_can_be_used_again(client: TestClient) -> None:
    route = await create_route(client)
    await client.delete(f"{ROUTES}/{route['id']}")
    again = await create_route(client, path=route["path"])
    assert again["id"] != route["id"]


async def test_path_is_unique_on_create_and_on_patch(client: TestClient) -> None:
    first = await create_route(client)
    taken = await client.post(ROUTES, json=new_route(path=first["path"]))
    assert taken.status == 409
    body = await taken.json()
    assert_problem(body, 409, ROUTES)
    assert body["type"] == "route_exists"
    second = await create_route(client)
    moved = await client.patch(f"{ROUTES}/{second['id']}", json={"path": first["path"]})
    assert moved.status == 409


async def test_unknown_or_malformed_ids_are_404(client: TestClient) -> None:
    for route_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"{ROUTES}/{route_id}")
        assert response.status == 404


async def test_key_ids_must_name_live_keys(client: TestClient) -> None:
    deleted = await create(client)
    await client.delete(f"/api/key-management/keys/{deleted['keyId']}")
    for key_id in (str(uuid.uuid4()), deleted["keyId"]):
        response = await client.post(ROUTES, json=new_route(keyIds=[key_id]))
        assert response.status == 400
        body = await response.json()
        assert key_id in body["detail"]["keyIds"][0]
    route = await create_route(client)
    response = await client.patch(f"{ROUTES}/{route['id']}", json={"keyIds": [str(uuid.uuid4())]})
    assert response.status == 400


BAD_ROUTES = {
    "path without slash": {"path": "team-a/chat"},
    "path with dot segment": {"path": "/team-a/../keys"},
    "path with a dot": {"path": "/team-a/./chat"},
    "path with empty segment": {"path": "/team-a//chat"},
    "path with trailing slash": {"path": "/team-a/"},
    "path with query": {"path": "/team-a?x=1"},
    "path with space": {"path": "/team a"},
    "path too long": {"path": "/" + "a" * 300},
    "no steps": {"steps": []},
    "steps missing": {"steps": None},
    "too many steps": {"steps": [{"provider": "openai", "model": "m"}] * 11},
    "unknown provider": {"steps": [{"provider": "bedrock", "model": "m"}]},
    "no model": {"steps": [{"provider": "openai"}]},
    "empty model": {"steps": [{"provider": "openai", "model": ""}]},
    "retries too many": {"steps": [{"provider": "openai", "model": "m", "retries": 11}]},
    "retries negative": {"steps": [{"provider": "openai", "model": "m", "retries": -1}]},
    "retries fraction": {"steps": [{"provider": "openai", "model": "m", "retries": 1.5}]},
    "retries bool": {"steps": [{"provider": "openai", "model": "m", "retries": True}]},
    "bad interval": {"steps": [{"provider": "openai", "model": "m", "retryInterval": "soon"}]},
    "long interval": {"steps": [{"provider": "openai", "model": "m", "retryInterval": "1h"}]},
    "zero timeout": {"steps": [{"provider": "openai", "model": "m", "timeout": "0s"}]},
    "long timeout": {"steps": [{"provider": "openai", "model": "m", "timeout": "2h"}]},
    "setting id": {"steps": [{"provider": "openai", "model": "m", "settingId": "abc"}]},
    "params off azure": {
        "steps": [{"provider": "openai", "model": "m", "params": {"deploymentId": "d"}}]
    },
    "unknown param": {"steps": [{"provider": "azure", "model": "m", "params": {"region": "x"}}]},
    "request params not object": {
        "steps": [{"provider": "openai", "model": "m", "requestParams": [1]}]
    },
    "request params sets model": {
        "steps": [{"provider": "openai", "model": "m", "requestParams": {"model": "x"}}]
    },
    "request params sets stream": {
        "steps": [{"provider": "openai", "model": "m", "requestParams": {"stream": True}}]
    },
    "request params too big": {
        "steps": [{"provider": "openai", "model": "m", "requestParams": {"x": "y" * 20000}}]
    },
    # jsonb gives 1e20 back as an integer past 64 bits, which no answer could carry.
    "request params number past 64 bits": {
        "steps": [{"provider": "openai", "model": "m", "requestParams": {"top_k": 1e20}}]
    },
    "unknown step field": {"steps": [{"provider": "openai", "model": "m", "weight": 1}]},
    "retry strategy": {"retryStrategy": "linear"},
    "cache ttl too long": {"cacheConfig": {"enabled": True, "ttl": "8d"}},
    "cache ttl zero": {"cacheConfig": {"enabled": True, "ttl": "0"}},
    "cache enabled not bool": {"cacheConfig": {"enabled": "yes"}},
    "cache unknown field": {"cacheConfig": {"enabled": True, "size": 1}},
    "cool-down failures": {"coolDown": {"failures": -1}},
    "cool-down period": {"coolDown": {"period": "2h"}},
    "key id": {"keyIds": ["nope"]},
    "key ids not list": {"keyIds": "nope"},
    "no name": {"name": ""},
    "nul in name": {"name": "a\x00b"},
    "unknown field": {"weights": [1]},
    "id given": {"id": str(uuid.uuid4())},
}


@pytest.mark.parametrize("change", BAD_ROUTES.values(), ids=BAD_ROUTES.keys())
async def test_bad_input_is_a_400_problem(client: TestClient, change: dict[str, Any]) -> None:
    body = {k: v for k, v in new_route(**change).items() if v is not None}
    response = await client.post(ROUTES, json=body)
    assert response.status == 400, await response.text()
    assert_problem(await response.json(), 400, ROUTES)
    route = await create_route(client)
    patched = await client.patch(f"{ROUTES}/{route['id']}", json=change)
    if change != {"steps": None}:
        assert patched.status == 400, await patched.text()
        assert_problem(await patched.json(), 400, f"{ROUTES}/{route['id']}")


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"null"])
async def test_malformed_bodies_are_400(client: TestClient, body: bytes) -> None:
    response = await client.post(ROUTES, data=body)
    assert response.status == 400
    route = await create_route(client)
    assert (await client.patch(f"{ROUTES}/{route['id']}", data=body)).status == 400


async def test_every_write_is_announced_on_the_change_feed(
    client: TestClient, settings: Settings
) -> None:
    pg = settings.postgres
    listener = await asyncpg.connect(
        host=pg.hosts[0], port=pg.port, user=pg.username, database=pg.db_name
    )
    received: list[str] = []
    await listener.add_listener(CHANNEL, lambda *args: received.append(args[-1]))
    try:
        route = await create_route(client)
        await client.patch(f"{ROUTES}/{route['id']}", json={"name": "renamed"})
        await client.delete(f"{ROUTES}/{route['id']}")
        await listener.execute("SELECT 1")  # notifications arrive before the reply
        changes = [parse_change(payload) for payload in received]
        ours = [c for c in changes if c is not None and c.object_id == route["id"]]
        assert [c.kind for c in ours] == [ROUTE] * 3
        assert ours[0].version <= ours[1].version <= ours[2].version
    finally:
        await listener.close()


async def test_stored_steps_are_the_api_shape(client: TestClient, settings: Settings) -> None:
    route = await create_route(client)
    pg = settings.postgres
    connection = await asyncpg.connect(
        host=pg.hosts[0], port=pg.port, user=pg.username, database=pg.db_name
    )
    try:
        stored = await connection.fetchval(
            "SELECT steps::text FROM routes WHERE route_id = $1", route["id"]
        )
    finally:
        await connection.close()
    assert orjson.loads(stored) == route["steps"]


@pytest.mark.parametrize(
    "params",
    [
        {"suffix": "a\x00b"},
        {"k\x00": 1},
        {"deep": [{"x": "\x00"}]},
        {"s": "\ud800"},
    ],
)
async def test_request_params_postgres_cannot_store_are_400(
    client: TestClient, params: dict[str, Any]
) -> None:
    body = new_route(steps=[{"provider": "openai", "model": "m", "requestParams": params}])
    response = await client.post(ROUTES, json=body)
    assert response.status == 400, await response.text()
    assert_problem(await response.json(), 400, ROUTES)


async def test_request_params_nested_past_what_can_be_stored_are_400(client: TestClient) -> None:
    body = new_route(steps=[{"provider": "openai", "model": "m", "requestParams": {"n": 0}}])
    nested = "[" * 1000 + "]" * 1000  # deeper than Python's recursion limit
    raw = orjson.dumps(body).replace(b'{"n":0}', b'{"n":' + nested.encode() + b"}")
    response = await client.post(ROUTES, data=raw)
    assert response.status == 400, await response.text()
    assert "requestParams" in str((await response.json())["detail"])


async def steps_problem(client: TestClient, **fields: Any) -> str:
    response = await client.post(ROUTES, json=new_route(**fields))
    body = await response.json()
    assert response.status == 400, body
    return " ".join(body["detail"]["steps"])


async def test_every_key_must_be_able_to_take_every_step(client: TestClient) -> None:
    plain = (await create(client))["keyId"]  # no settings: the gateway's OpenAI credential
    claude = await create_setting(client, provider="anthropic", allowedModels=["claude-a"])
    other_claude = await create_setting(client, provider="anthropic")
    openai_setting = await create_setting(client)
    with_claude = (await create(client, settingIds=[claude["id"]]))["keyId"]
    anthropic_step = {"provider": "anthropic", "model": "claude-a"}
    openai_step = {"provider": "openai", "model": "gpt-4o"}

    await create_route(client, keyIds=[plain], steps=[openai_step])
    await create_route(client, keyIds=[with_claude], steps=[anthropic_step])
    named = {**anthropic_step, "settingId": claude["id"]}
    await create_route(client, keyIds=[with_claude], steps=[named])
    # A key without settings has no anthropic credential; one with only an anthropic setting
    # has no OpenAI one (its settings are all it may use).
    assert f"key {plain} has no anthropic" in await steps_problem(
        client, keyIds=[plain], steps=[anthropic_step]
    )
    assert f"key {with_claude} has no openai" in await steps_problem(
        client, keyIds=[with_claude], steps=[openai_step]
    )
    # The model must be one the setting allows, named or the key's own.
    for step in ({**anthropic_step, "model": "claude-b"},
                 {**anthropic_step, "model": "claude-b", "settingId": claude["id"]}):  # fmt: skip
        assert "'claude-b' is not among the allowedModels" in await steps_problem(
            client, keyIds=[with_claude], steps=[step]
        )
    # A named setting: of the step's provider, held by every key.
    assert "is for openai, not anthropic" in await steps_problem(
        client, steps=[{**anthropic_step, "settingId": openai_setting["id"]}]
    )
    assert f"key {with_claude} does not hold setting {other_claude['id']}" in await steps_problem(
        client, keyIds=[with_claude], steps=[{**anthropic_step, "settingId": other_claude["id"]}]
    )
    missing = str(uuid.uuid4())
    assert missing in await steps_problem(client, steps=[{**openai_step, "settingId": missing}])
    # Only through chat completions: the translator speaks nothing else.
    assert "chat completions only" in await steps_problem(
        client, path="/team/embeddings", keyIds=[with_claude], steps=[anthropic_step]
    )
    # A PATCH is checked against the route it makes.
    route = await create_route(client, keyIds=[plain], steps=[openai_step])
    response = await client.patch(f"{ROUTES}/{route['id']}", json={"steps": [anthropic_step]})
    assert response.status == 400, await response.text()


async def test_a_setting_a_route_names_cannot_be_deleted(client: TestClient) -> None:
    setting = await create_setting(client, provider="anthropic")
    route = await create_route(
        client, steps=[{"provider": "anthropic", "model": "c", "settingId": setting["id"]}]
    )
    response = await client.delete(f"{SETTINGS}/{setting['id']}")
    assert response.status == 409
    assert f"route {route['id']}" in str((await response.json())["detail"])
    await client.delete(f"{ROUTES}/{route['id']}")
    assert (await client.delete(f"{SETTINGS}/{setting['id']}")).status == 204
