"""Key fields for access control, extra rate windows and request logging, through keymgmt."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from keymgmt.app import create_app
from shared.config import Settings
from tests.integration.test_keymgmt_api import KEYS, assert_problem, create, new_key

CHAT = "/api/providers/openai/v1/chat/completions"


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


async def test_fields_are_returned_stored_and_patchable(client: TestClient, db: Any) -> None:
    key = await create(
        client,
        allowedPaths=[{"path": CHAT, "method": "post"}, {"path": CHAT, "method": "POST"}],
        allowedModels=["gpt-4o-mini", "gpt-4o-mini"],
        rateLimits=[{"overTime": 3, "unit": "s"}, {"overTime": "5", "unit": "m"}],
        shouldLogRequest=True,
    )
    assert key["allowedPaths"] == [{"path": CHAT, "method": "POST"}]
    assert key["allowedModels"] == ["gpt-4o-mini"]
    assert key["rateLimits"] == [{"overTime": 3, "unit": "s"}, {"overTime": 5, "unit": "m"}]
    assert (key["shouldLogRequest"], key["shouldLogResponse"]) == (True, False)
    fetched = await (await client.get(f"{KEYS}/{key['keyId']}")).json()
    assert fetched == key

    response = await client.patch(
        f"{KEYS}/{key['keyId']}",
        json={"allowedModels": [], "rateLimits": [{"overTime": 1, "unit": "d"}],
              "shouldLogResponse": True},
    )  # fmt: skip
    patched = await response.json()
    assert response.status == 200, patched
    assert patched["allowedModels"] == []
    assert patched["allowedPaths"] == key["allowedPaths"]  # untouched
    assert patched["rateLimits"] == [{"overTime": 1, "unit": "d"}]
    assert (patched["shouldLogRequest"], patched["shouldLogResponse"]) == (True, True)
    stored = await db.fetchrow(
        "SELECT allowed_paths::text, rate_limits::text FROM keys WHERE key_id = $1",
        key["keyId"],
    )
    assert '"POST"' in stored[0] and '"overTime": 1' in stored[1]


async def test_defaults_allow_everything_and_log_nothing(client: TestClient) -> None:
    key = await create(client)
    assert key["allowedPaths"] == key["allowedModels"] == key["rateLimits"] == []
    assert key["shouldLogRequest"] is key["shouldLogResponse"] is False


@pytest.mark.parametrize(
    "fields",
    [
        {"allowedPaths": {"path": CHAT, "method": "POST"}},
        {"allowedPaths": [CHAT]},
        {"allowedPaths": [{"path": CHAT}]},
        {"allowedPaths": [{"path": "chat/completions", "method": "POST"}]},
        {"allowedPaths": [{"path": CHAT, "method": "FETCH"}]},
        {"allowedPaths": [{"path": CHAT, "method": "POST", "extra": 1}]},
        {"allowedPaths": [{"path": "/a\x00", "method": "POST"}]},
        {"allowedModels": "gpt-4o"},
        {"allowedModels": [""]},
        {"allowedModels": [1]},
        {"allowedModels": ["m"] * 257},
        {"rateLimits": [{"overTime": 0, "unit": "s"}]},
        {"rateLimits": [{"overTime": 1.5, "unit": "s"}]},
        {"rateLimits": [{"overTime": 3, "unit": "w"}]},
        {"rateLimits": [{"overTime": 3}]},
        {"rateLimits": [{"overTime": 3, "unit": "s"}] * 9},
        {"rateLimits": {"overTime": 3, "unit": "s"}},
        {"shouldLogRequest": "true"},
        {"shouldLogResponse": 1},
    ],
)
async def test_bad_fields_are_400_on_create_and_patch(
    client: TestClient, fields: dict[str, Any]
) -> None:
    response = await client.put(KEYS, json=new_key(**fields))
    assert_problem(await response.json(), 400, KEYS)
    key = await create(client)
    path = f"{KEYS}/{key['keyId']}"
    response = await client.patch(path, json=fields)
    assert_problem(await response.json(), 400, path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=6,
)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    field=st.sampled_from(["allowedPaths", "allowedModels", "rateLimits", "shouldLogRequest"]),
    value=_json,
)
async def test_any_value_is_a_200_or_a_problem(client: TestClient, field: str, value: Any) -> None:
    response = await client.put(KEYS, json=new_key(**{field: value}))
    body = await response.json()
    if response.status != 200:
        assert_problem(body, 400, KEYS)
