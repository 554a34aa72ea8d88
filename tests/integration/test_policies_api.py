"""The policy endpoints against a real Postgres: validation, keys that refer to them, the feed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.changes import CHANNEL, parse_change
from shared.config import Settings
from shared.models import ACTIONS, ENTITIES

POLICIES = "/api/policies"
KEYS = "/api/key-management/keys"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


def new_policy(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "pii",
        "tags": [uuid.uuid4().hex],
        "config": {"rules": {"email": "allow_but_redact", "ssn": "block"}},
        "regexConfig": {"rules": [{"definition": r"EMP-\d{6}", "action": "block"}]},
        "restore": True,
    }
    body.update(fields)
    return body


async def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.post(POLICIES, json=new_policy(**fields))
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_create_get_find_update_delete(client: TestClient) -> None:
    tag = f"team-{uuid.uuid4().hex[:8]}"  # the run's other policies share the database
    created = await create(client, tags=[tag])
    assert created["config"] == {"rules": {"email": "allow_but_redact", "ssn": "block"}}
    assert created["regexConfig"] == {"rules": [{"definition": r"EMP-\d{6}", "action": "block"}]}
    assert created["restore"] is True and created["createdAt"] == created["updatedAt"]
    uuid.UUID(created["id"])
    got = await client.get(f"{POLICIES}/{created['id']}")
    assert await got.json() == created
    unused = f"team-{uuid.uuid4().hex[:8]}"
    found = await client.get(POLICIES, params=[("tags", tag), ("tags", unused)])
    assert [p["id"] for p in await found.json()] == [created["id"]]

    patched = await client.patch(
        f"{POLICIES}/{created['id']}", json={"config": {"rules": {"all": "allow_but_warn"}}}
    )
    assert patched.status == 200
    updated = await patched.json()
    assert updated["config"] == {"rules": {"all": "allow_but_warn"}}
    assert updated["regexConfig"] == created["regexConfig"] and updated["name"] == "pii"

    deleted = await client.delete(f"{POLICIES}/{created['id']}")
    assert deleted.status == 204
    assert (await client.get(f"{POLICIES}/{created['id']}")).status == 404
    assert (await client.delete(f"{POLICIES}/{created['id']}")).status == 404


async def test_a_pattern_re2_refuses_is_a_400_naming_it(client: TestClient) -> None:
    rules = [
        {"definition": r"ok-\d+", "action": "block"},
        {"definition": r"(?<=x)y", "action": "block"},
    ]
    response = await client.post(POLICIES, json=new_policy(regexConfig={"rules": rules}))
    assert response.status == 400
    problem = await response.json()
    assert problem["type"] == "invalid_request"
    message = problem["detail"]["regexConfig"]["rules"]["1"]["definition"][0]
    assert "(?<=x)y" in message and "RE2" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"config": {"rules": {"passport": "block"}}},
        {"config": {"rules": {"email": "shred"}}},
        {"config": {"rules": ["email"]}},
        {"regexConfig": {"rules": [{"definition": "a*", "action": "block"}]}},
        {"regexConfig": {"rules": [{"definition": "x"}]}},
        {"regexConfig": {"rules": [{"definition": "x" * 1001, "action": "block"}]}},
        {"restore": "yes"},
        {"name": None},
        {"customConfig": {}},
    ],
)
async def test_invalid_policies_are_refused(client: TestClient, fields: dict[str, Any]) -> None:
    response = await client.post(POLICIES, json=new_policy(**fields))
    assert response.status == 400, await response.text()


async def test_unknown_ids_are_404(client: TestClient) -> None:
    for method in ("get", "patch", "delete"):
        for policy_id in (str(uuid.uuid4()), "not-a-uuid"):
            response = await getattr(client, method)(f"{POLICIES}/{policy_id}", json={})
            assert response.status == 404, (method, policy_id)


async def test_keys_refer_to_existing_policies_only(client: TestClient) -> None:
    policy = await create(client)
    key = {"name": "k", "key": f"sk-{uuid.uuid4().hex}", "policyId": policy["id"]}
    made = await client.put(KEYS, json=key)
    assert made.status == 200
    created_key = await made.json()
    assert created_key["policyId"] == policy["id"]

    missing = await client.put(
        KEYS, json={**key, "key": "x" + key["key"], "policyId": str(uuid.uuid4())}
    )
    assert missing.status == 400
    assert "policyId" in (await missing.json())["detail"]
    malformed = await client.put(KEYS, json={**key, "key": "y" + key["key"], "policyId": "p1"})
    assert malformed.status == 400

    refused = await client.delete(f"{POLICIES}/{policy['id']}")
    assert refused.status == 409
    assert (await refused.json())["type"] == "policy_in_use"

    detached = await client.patch(f"{KEYS}/{created_key['keyId']}", json={"policyId": None})
    assert (await detached.json())["policyId"] == ""
    assert (await client.delete(f"{POLICIES}/{policy['id']}")).status == 204
    again = await client.patch(f"{KEYS}/{created_key['keyId']}", json={"policyId": policy["id"]})
    assert again.status == 400  # deleted: no longer a policy a key can have


async def test_every_write_is_announced_on_the_change_feed(
    client: TestClient, settings: Settings
) -> None:
    pg = settings.postgres
    listener = await asyncpg.connect(
        host=pg.hosts[0], port=pg.port, user=pg.username, database=pg.db_name
    )
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        policy = await create(client)
        await client.patch(f"{POLICIES}/{policy['id']}", json={"name": "renamed"})
        await client.delete(f"{POLICIES}/{policy['id']}")
        changes = [parse_change(await asyncio.wait_for(heard.get(), 5)) for _ in range(3)]
    finally:
        await listener.close()
    assert all(c is not None and (c.kind, c.object_id) == ("policy", policy["id"]) for c in changes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40)
    | st.sampled_from([*ENTITIES, *ACTIONS, "all", r"\d+", "(", "a*"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["rules", "definition", "action", *ENTITIES]) | st.text(max_size=8),
        inner, max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip
FIELDS = ["name", "tags", "config", "regexConfig", "restore"]
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)
fuzz = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@fuzz
@given(body=bodies | json_values)
async def test_random_policy_bodies_never_5xx(client: TestClient, body: Any) -> None:
    response = await client.post(POLICIES, data=orjson.dumps(body))
    assert response.status in (200, 400), await response.text()
    if response.status == 200:
        policy_id = (await response.json())["id"]
        patched = await client.patch(f"{POLICIES}/{policy_id}", data=orjson.dumps(body))
        assert patched.status in (200, 400), await patched.text()
