"""The original gateway's events and reporting endpoints against a real Postgres."""

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
from tests.integration.test_keymgmt_api import assert_problem, create

T0 = 1_800_000_000  # a day's start: 1,800,000,000 = 20,833 days and 28,800 s
DAY0 = T0 - T0 % 86400


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def add(engine: AsyncEngine, key_id: str, at: int, **fields: Any) -> str:
    event_id = str(uuid.uuid4())
    moment = datetime.fromtimestamp(at, UTC)
    row = {
        "event_id": event_id, "request_id": f"req-{event_id}", "key_id": key_id,
        "model": "gpt-4o-mini", "path": "chat/completions", "status": 200, "prompt_tokens": 6,
        "completion_tokens": 5, "cached_tokens": 0, "cost_nano": 1000, "latency_ms": 10.0,
        "upstream_ms": 9.0, "streamed": False, "created_at": moment, "recorded_at": moment,
        **fields,
    }  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(usage_events.insert().values(row))
    return event_id


@pytest.fixture
async def seeded(client: TestClient, engine: AsyncEngine) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    first, second = await create(client, tags=[tag]), await create(client, tags=[tag])
    a, b = first["keyId"], second["keyId"]
    ids = [
        await add(engine, a, T0, custom_id="job-1", user_id="alice", metadata={"x": 1}),
        await add(engine, a, T0 + 30, custom_id="job-2", user_id="alice", latency_ms=30.0),
        await add(engine, a, T0 + 70, user_id="bob", status=500, model="gpt-4o"),
        await add(engine, b, T0 + 86400, custom_id="job-1", cost_nano=5000),
    ]
    return {"tag": tag, "a": a, "b": b, "ids": ids}


async def test_get_events_by_key_custom_id_or_user(client: TestClient, seeded: Any) -> None:
    a, ids = seeded["a"], seeded["ids"]
    found = await (await client.get(
        "/api/events", params={"keyIds": a, "start": str(T0), "end": str(T0 + 60)}
    )).json()  # fmt: skip
    assert [event["id"] for event in found] == ids[:2]
    event = found[0]
    assert (event["key_id"], event["custom_id"], event["userId"]) == (a, "job-1", "alice")
    assert event["cost_in_usd"] == pytest.approx(1e-6)
    assert (event["prompt_token_count"], event["completion_token_count"]) == (6, 5)
    assert (event["created_at"], event["tags"], event["metadata"]) == (
        T0,
        [seeded["tag"]],
        {"x": 1},
    )
    by_custom = await (await client.get("/api/events", params={"customId": "job-1"})).json()
    assert {event["id"] for event in by_custom} == {ids[0], ids[3]}
    both = await (
        await client.get("/api/events", params={"customId": "job-1", "userId": "alice"})
    ).json()
    assert [event["id"] for event in both] == [ids[0]]
    for params in ({}, {"keyIds": a}, {"keyIds": "nope", "start": "1", "end": "2"},
                   {"userId": "x", "start": "soon"}):  # fmt: skip
        response = await client.get("/api/events", params=params)
        assert_problem(await response.json(), 400, "/api/events")


async def test_reporting_events_in_increments_split_by_filters(
    client: TestClient, seeded: Any
) -> None:
    body = {"keyIds": [seeded["a"]], "start": T0, "end": T0 + 120, "increment": 60}
    report = await (await client.post("/api/reporting/events", json=body)).json()
    points = report["dataPoints"]
    assert [(p["timeStamp"], p["numberOfRequests"], p["successCount"]) for p in points] == [
        (T0, 2, 2),
        (T0 + 60, 1, 0),
    ]
    assert points[0]["latencyInMs"] == 40 and points[0]["costInUsd"] == pytest.approx(2e-6)
    assert report["latencyInMsMedian"] == pytest.approx(10.0)
    split = await (await client.post(
        "/api/reporting/events", json={**body, "filters": ["userId", "model"]}
    )).json()  # fmt: skip
    assert [(p["timeStamp"], p["userId"], p["model"]) for p in split["dataPoints"]] == [
        (T0, "alice", "gpt-4o-mini"),
        (T0 + 60, "bob", "gpt-4o"),
    ]
    empty = await (await client.post(
        "/api/reporting/events", json={"tags": [seeded["tag"]], "customIds": ["none"],
                                       "start": T0, "end": T0 + 180, "increment": 60}
    )).json()  # fmt: skip
    assert [p["numberOfRequests"] for p in empty["dataPoints"]] == [0, 0, 0]


async def test_events_by_day_top_keys_and_id_listings(client: TestClient, seeded: Any) -> None:
    a, b = seeded["a"], seeded["b"]
    body = {"keyIds": [a, b], "start": T0 - 10, "end": T0 + 2 * 86400}
    days = (await (await client.post("/api/reporting/events-by-day", json=body)).json())[
        "dataPoints"
    ]
    assert [(p["timeStamp"], p["keyId"], p["numberOfRequests"]) for p in days] == [
        (DAY0, a, 3),
        (DAY0 + 86400, b, 1),
    ]
    top = await (
        await client.post("/api/reporting/top-keys", json={"tags": [seeded["tag"]]})
    ).json()
    assert [(p["keyId"], p["costInUsd"]) for p in top["dataPoints"]] == [
        (b, pytest.approx(5e-6)),
        (a, pytest.approx(3e-6)),
    ]
    ranged = {"tags": [seeded["tag"]], "start": T0, "end": T0 + 60, "order": "asc"}
    top = await (await client.post("/api/reporting/top-keys", json=ranged)).json()
    assert [(p["keyId"], p["costInUsd"]) for p in top["dataPoints"]] == [
        (b, 0.0),
        (a, pytest.approx(2e-6)),
    ]
    users = await (await client.get("/api/reporting/user-ids", params={"keyId": a})).json()
    assert users == ["alice", "bob"]
    customs = await (await client.get("/api/reporting/custom-ids", params={"keyId": a})).json()
    assert customs == ["job-1", "job-2"]
    for path in ("/api/reporting/user-ids", "/api/reporting/custom-ids"):
        response = await client.get(path, params={"keyId": "nope"})
        assert_problem(await response.json(), 400, path)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/reporting/events", {"start": 1, "end": 2}),
        ("/api/reporting/events", {"start": 1, "end": 2, "increment": 0}),
        ("/api/reporting/events", {"start": 0, "end": 10**9, "increment": 1}),
        ("/api/reporting/events", {"end": 2, "increment": 1}),
        ("/api/reporting/events", {"start": 1, "end": 2, "increment": 1, "filters": ["path"]}),
        ("/api/reporting/events", {"start": 3, "end": 2, "increment": 1}),
        ("/api/reporting/events-by-day", {"start": 1}),
        ("/api/reporting/events-by-day", {"start": 1, "end": 2, "keyIds": ["x"]}),
        ("/api/reporting/top-keys", {"order": "up"}),
        ("/api/reporting/top-keys", {"limit": 0}),
        ("/api/reporting/top-keys", {"revoked": "no"}),
    ],
)
async def test_bad_reporting_bodies_are_400(client: TestClient, path: str, body: Any) -> None:
    response = await client.post(path, json=body)
    assert_problem(await response.json(), 400, path)


async def test_far_times_and_long_increments_are_answered(client: TestClient) -> None:
    body = {"start": 19_897_105_374, "end": 29_897_105_374, "increment": 3_153_600_000}
    response = await client.post("/api/reporting/events", json=body)
    assert response.status == 200, await response.text()
    assert len((await response.json())["dataPoints"]) == 4
    response = await client.post("/api/reporting/events", json={**body, "increment": 2**40})
    assert_problem(await response.json(), 400, "/api/reporting/events")
