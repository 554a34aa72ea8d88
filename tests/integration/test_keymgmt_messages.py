"""keymgmt's error messages say what to do, not only what was wrong."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.test_keymgmt_api import KEYS, assert_problem, client, new_key

__all__ = ["client"]  # the fixture, shared with the API tests


async def create_detail(client: TestClient, **fields: Any) -> dict[str, list[str]]:
    response = await client.put(KEYS, json=new_key(**fields))
    assert response.status == 400
    body = await response.json()
    assert_problem(body, 400, KEYS)
    return body["detail"]  # type: ignore[no-any-return]


async def test_an_unknown_unit_names_every_unit_in_words(client: TestClient) -> None:
    detail = await create_detail(client, rateLimitOverTime=5, rateLimitUnit="w")
    assert detail["rateLimitUnit"] == [
        "must be one of s (seconds), m (minutes), h (hours) or d (days)"
    ]


async def test_a_bad_ttl_gets_one_message_with_examples(client: TestClient) -> None:
    detail = await create_detail(client, ttl="30 days")
    [message] = detail["ttl"]
    assert "'30 days'" in message and "2d" in message


async def test_post_where_put_creates_is_a_405_naming_put(client: TestClient) -> None:
    response = await client.post(KEYS, json=new_key())
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "PUT"}
    body = await response.json()
    assert_problem(body, 405, KEYS)
    assert body["type"] == "method_not_allowed"
    assert "create with PUT" in body["detail"]


async def test_a_revoked_key_value_stays_taken_and_the_409_says_how_to_reuse_it(
    client: TestClient,
) -> None:
    body = new_key()
    created = await (await client.put(KEYS, json=body)).json()
    revoked = await client.patch(f"{KEYS}/{created['keyId']}", json={"revoked": True})
    assert revoked.status == 200
    response = await client.put(KEYS, json=body)
    assert response.status == 409
    assert "delete it" in (await response.json())["detail"]
    assert (await client.delete(f"{KEYS}/{created['keyId']}")).status in (200, 204)
    assert (await client.put(KEYS, json=body)).status == 200
