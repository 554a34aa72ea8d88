"""POST /api/v2/key-management/keys and POST /api/v2/events against a real Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.app import create_app
from shared.config import Settings
from shared.db import usage_events
from tests.conftest import with_admin_pass
from tests.integration.test_keymgmt_api import KEYS, assert_problem, create

KEY_SEARCH = "/api/v2/key-management/keys"
EVENT_SEARCH = "/api/v2/events"
T0 = 1_800_000_000


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def search(client: TestClient, path: str, body: Any, status: int = 200) -> Any:
    response = await client.post(path, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def names(client: TestClient, **query: Any) -> list[str]:
    found = await search(client, KEY_SEARCH, query)
    return [key["name"] for key in found["keys"]]


async def test_keys_filtered_by_tag_name_state_and_ids(client: TestClient) -> None:
    tag, other = uuid.uuid4().hex, uuid.uuid4().hex
    alpha = await create(client, name="Alpha 100% team", tags=[tag])
    beta = await create(client, name="beta_team", tags=[tag, other])
    gamma = await create(client, name="gamma", tags=[other])
    gone = await create(client, name="deleted one", tags=[tag])
    await client.patch(f"{KEYS}/{beta['keyId']}", json={"revoked": True})
    await client.delete(f"{KEYS}/{gone['keyId']}")

    assert await names(client, tags=[tag]) == ["Alpha 100% team", "beta_team"]
    assert await names(client, tags=[tag, other], order="desc") == [
        "gamma",
        "beta_team",
        "Alpha 100% team",
    ]
    assert await names(client, tags=[tag, other], name="TEAM") == ["Alpha 100% team", "beta_team"]
    # % and _ are matched as themselves, not as patterns.
    assert await names(client, tags=[tag, other], name="100%") == ["Alpha 100% team"]
    assert await names(client, tags=[tag, other], name="a_t") == ["beta_team"]
    assert await names(client, tags=[tag, other], revoked=True) == ["beta_team"]
    assert await names(client, tags=[tag, other], revoked=False) == ["Alpha 100% team", "gamma"]
    ids = [alpha["keyId"], gamma["keyId"], gone["keyId"]]
    assert await names(client, keyIds=ids) == ["Alpha 100% team", "gamma"]
    assert await names(client, keyIds=ids, tags=[other]) == ["gamma"]


async def test_keys_in_pages_with_a_count(client: TestClient) -> None:
    tag = uuid.uuid4().hex
    for number in range(5):
        await create(client, name=f"key {number}", tags=[tag])
    first = await search(client, KEY_SEARCH, {"tags": [tag], "limit": 2, "returnCount": True})
    assert [k["name"] for k in first["keys"]] == ["key 0", "key 1"] and first["count"] == 5
    last = await search(client, KEY_SEARCH, {"tags": [tag], "limit": 2, "offset": 4})
    assert [k["name"] for k in last["keys"]] == ["key 4"] and last["count"] is None
    assert set(last["keys"][0]) >= {"keyId", "createdAt", "tags", "costLimitInUsd", "expiresAt"}
    assert "key" not in last["keys"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"order": "up"}, "order"),
        ({"keyIds": ["not-a-uuid"]}, "keyIds"),
        ({"tags": "one"}, "tags"),
        ({"name": "a\x00b"}, "name"),
        ({"revoked": "yes"}, "revoked"),
        ({"returnCount": 1}, "returnCount"),
        ({"revoked": 0}, "revoked"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_key_queries_are_400s_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    problem = await search(client, KEY_SEARCH, body, status=400)
    assert_problem(problem, 400, KEY_SEARCH)
    assert field in problem["detail"]


async def test_a_flag_given_as_a_number_is_refused(client: TestClient) -> None:
    key = await create(client)
    response = await client.patch(f"{KEYS}/{key['keyId']}", json={"revoked": 1})
    assert response.status == 400
    assert "revoked" in (await response.json())["detail"]


async def test_listing_needs_the_admin_pass(aiohttp_client: Any, settings: Settings) -> None:
    guarded = await aiohttp_client(create_app(with_admin_pass(settings, "s3cret")))
    for path in (KEY_SEARCH, EVENT_SEARCH):
        assert (await guarded.post(path, json={})).status == 401
        response = await guarded.post(path, json={}, headers={"X-API-KEY": "s3cret"})
        assert response.status == 200


async def add_event(engine: AsyncEngine, key_id: str, at: int, cost_nano: int, status: int) -> str:
    event_id = str(uuid.uuid4())
    moment = datetime.fromtimestamp(at, UTC)
    async with engine.begin() as connection:
        await connection.execute(
            usage_events.insert().values(
                event_id=event_id, request_id=f"req-{at}", key_id=key_id, model="gpt-4o-mini",
                path="chat/completions", status=status, prompt_tokens=6, completion_tokens=5,
                cached_tokens=0, cost_nano=cost_nano, latency_ms=12.5, upstream_ms=11.0,
                streamed=False, created_at=moment, recorded_at=moment,
            )
        )  # fmt: skip
    return event_id


@pytest.fixture
async def two_keys_events(client: TestClient, engine: AsyncEngine) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    first = await create(client, name="first", tags=[tag, "first-only"])
    second = await create(client, name="second", tags=[tag])
    rows = [
        (first, T0, 300, 200),
        (first, T0 + 10, 100, 200),
        (second, T0 + 20, 200, 429),
        (second, T0 + 30, 0, 500),
    ]
    ids = [
        await add_event(engine, key["keyId"], at, cost, status) for key, at, cost, status in rows
    ]
    return {"tag": tag, "first": first["keyId"], "second": second["keyId"], "ids": ids}


async def event_ids(client: TestClient, **query: Any) -> list[str]:
    found = await search(client, EVENT_SEARCH, query)
    return [event["eventId"] for event in found["events"]]


async def test_events_filtered_and_ordered(client: TestClient, two_keys_events: Any) -> None:
    tag, ids = two_keys_events["tag"], two_keys_events["ids"]
    newest_first = list(reversed(ids))
    assert await event_ids(client, tags=[tag]) == newest_first
    assert await event_ids(client, tags=[tag], dateOrder="asc") == ids
    assert await event_ids(client, tags=[tag], costOrder="desc") == [ids[0], ids[2], ids[1], ids[3]]
    assert await event_ids(client, tags=[tag], costOrder="asc") == [ids[3], ids[1], ids[2], ids[0]]
    assert await event_ids(client, keyIds=[two_keys_events["first"]]) == [ids[1], ids[0]]
    assert await event_ids(client, tags=["first-only"], keyIds=[two_keys_events["second"]]) == []
    assert await event_ids(client, tags=[tag], start=T0 + 10, end=T0 + 30) == [ids[2], ids[1]]
    assert await event_ids(client, tags=[tag], status=429) == [ids[2]]
    assert await event_ids(client, tags=[tag], customIds=[], userIds=[], actions=[]) == newest_first
    for absent in ("customIds", "userIds", "actions"):
        assert await event_ids(client, tags=[tag], **{absent: ["anything"]}) == []


async def test_events_in_pages_with_a_count_and_key_names(
    client: TestClient, two_keys_events: Any
) -> None:
    tag, ids = two_keys_events["tag"], two_keys_events["ids"]
    query = {"tags": [tag], "limit": 3, "offset": 1, "returnCount": True}
    page = await search(client, EVENT_SEARCH, query)
    assert [e["eventId"] for e in page["events"]] == [ids[2], ids[1], ids[0]]
    assert page["count"] == 4
    assert [e["keyName"] for e in page["events"]] == ["second", "first", "first"]
    event = page["events"][0]
    assert event["status"] == 429 and event["createdAt"] == T0 + 20
    assert event["costInUsd"] == pytest.approx(200e-9)
    assert (await search(client, EVENT_SEARCH, {"tags": [tag]}))["count"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"costOrder": "asc", "dateOrder": "desc"}, "costOrder"),
        ({"start": 20, "end": 10}, "start"),
        ({"start": -1}, "start"),
        ({"end": "soon"}, "end"),
        ({"status": 42}, "status"),
        ({"status": "200"}, "status"),
        ({"limit": 5000}, "limit"),
        ({"customIds": [1]}, "customIds"),
        ({"keyIds": ["x"]}, "keyIds"),
        ({"policyId": "p"}, "policyId"),
    ],
)
async def test_bad_event_queries_are_400s_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    problem = await search(client, EVENT_SEARCH, body, status=400)
    assert_problem(problem, 400, EVENT_SEARCH)
    assert field in problem["detail"]


async def test_a_body_that_is_not_an_object_is_a_400(client: TestClient) -> None:
    for path in (KEY_SEARCH, EVENT_SEARCH):
        for raw in (b"[]", b"{", b""):
            response = await client.post(path, data=raw)
            assert response.status == 400
            assert_problem(await response.json(), 400, path)


async def test_usage_buckets_count_the_failed_calls(
    client: TestClient, two_keys_events: Any
) -> None:
    query = {"granularity": "day", "start": str(T0 - 1), "end": str(T0 + 60)}
    second = two_keys_events["second"]
    usage = await (await client.get(f"/api/reporting/keys/{second}/usage", params=query)).json()
    assert [(b["requests"], b["errors"]) for b in usage["buckets"]] == [(2, 2)]
    first = two_keys_events["first"]
    usage = await (await client.get(f"/api/reporting/keys/{first}/usage", params=query)).json()
    assert [(b["requests"], b["errors"]) for b in usage["buckets"]] == [(2, 0)]


async def test_an_event_of_a_key_keymgmt_never_knew_has_no_key_name(
    client: TestClient, engine: AsyncEngine
) -> None:
    stranger = str(uuid.uuid4())
    await add_event(engine, stranger, T0, 100, 200)
    body = await (await client.post(EVENT_SEARCH, json={"keyIds": [stranger]})).json()
    assert [(e["keyId"], e["keyName"]) for e in body["events"]] == [(stranger, None)]
    document = await (await client.get("/api/openapi.json")).json()
    listed = document["paths"]["/api/v2/events"]["post"]["responses"]["200"]
    schema = listed["content"]["application/json"]["schema"]
    assert schema["properties"]["events"]["items"]["properties"]["keyName"]["nullable"] is True
