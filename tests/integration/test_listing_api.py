"""POST /api/v2/key-management/keys and POST /api/v2/events against a real Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from shared.config import Settings
from tests.integration.test_keymgmt_api import KEYS, create


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def test_a_flag_given_as_a_number_is_refused(client: TestClient) -> None:
    key = await create(client)
    response = await client.patch(f"{KEYS}/{key['keyId']}", json={"revoked": 1})
    assert response.status == 400
    assert "revoked" in (await response.json())["detail"]
