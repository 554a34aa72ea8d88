"""X-CUSTOM-EVENT-ID and X-METADATA on the call's event, and the end user it names."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import Gateway

HI = [{"role": "user", "content": "hi"}]


async def events_of(gateway: Gateway, count: int, **query: Any) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        while True:
            response = await gateway.keymgmt.post("/api/v2/events", json=query)
            assert response.status == 200, await response.text()
            found: list[dict[str, Any]] = (await response.json())["events"]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def test_the_headers_and_the_user_are_recorded_on_the_event(gateway: Gateway) -> None:
    raw, key = await gateway.create_key()
    metadata = {"team": "search", "run": 7, "tags": ["a", "b"]}
    await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,
        user="alice",
        extra_headers={
            "X-CUSTOM-EVENT-ID": "job-42",
            "X-METADATA": orjson.dumps(metadata).decode(),
        },
    )
    await gateway.client(raw).chat.completions.create(model="gpt-4o-mini", messages=HI)
    [event] = await events_of(gateway, 1, customIds=["job-42"])
    assert (event["keyId"], event["customId"], event["userId"]) == (key["keyId"], "job-42", "alice")
    assert event["metadata"] == metadata
    assert [e["customId"] for e in await events_of(gateway, 1, userIds=["alice"])] == ["job-42"]
    both = await events_of(gateway, 2, keyIds=[key["keyId"]])
    newest = both[0]  # the call without annotations
    assert (newest["customId"], newest["userId"], newest["metadata"]) == (None, None, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-METADATA": "{oops"},
        {"X-METADATA": "[1, 2]"},
        {"X-METADATA": '"text"'},
        {"X-METADATA": orjson.dumps({"big": "x" * 4100}).decode()},
        {"X-METADATA": '{"a": "\\u0000"}'},
        {"X-METADATA": '{"a": [1e20]}'},  # jsonb would give it back as an integer past 64 bits
        {"X-CUSTOM-EVENT-ID": "x" * 257},
    ],
)
async def test_bad_annotations_are_400_and_cost_nothing(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    raw, key = await gateway.create_key(rateLimitOverTime=1, rateLimitUnit="m")
    with pytest.raises(openai.BadRequestError) as raised:
        await gateway.client(raw).chat.completions.create(
            model="gpt-4o-mini", messages=HI, extra_headers=headers
        )
    assert raised.value.code in ("invalid_metadata", "invalid_custom_event_id")
    assert gateway.upstream.recorded == []
    assert (await gateway.spend(key["keyId"]))["requestsInWindow"] == 0
