"""The proxy keeps serving from its snapshot while Postgres is away."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
import services

from tests.conftest import on_postgres
from tests.e2e.conftest import Start


async def test_existing_keys_keep_working_without_postgres(
    start_gateway: Start,
    private_postgres: services.Postgres,
    settings: Any,
) -> None:
    pg = on_postgres(settings, private_postgres).postgres
    gateway = await start_gateway(postgres=pg)
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    assert (await client.models.list()).data

    await asyncio.to_thread(private_postgres.stop)
    await gateway.wait_for_refresh()  # a refresh fails in between
    for _ in range(5):
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        await gateway.client("sk-unknown").models.list()

    await asyncio.to_thread(private_postgres.start)
    second, _ = await gateway.create_key()
    assert (await gateway.client(second).models.list()).data
