"""The proxy's own errors name the likely fix."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import Gateway

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_a_base_url_without_the_prefix_is_told_the_prefix(gateway: Gateway) -> None:
    base_url = str(gateway.proxies[0].make_url("/v1"))
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-any", max_retries=0)
    with pytest.raises(openai.NotFoundError) as refused:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    await client.close()
    assert "base_url ends in /api/providers/openai/v1" in refused.value.message


async def test_an_unknown_key_is_told_a_new_key_may_not_have_arrived(gateway: Gateway) -> None:
    client = gateway.client("sk-not-created-yet")
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "created less than a second ago" in refused.value.message


async def test_a_timeout_without_a_unit_is_told_to_give_one(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw, default_headers={"x-request-timeout": "30"})
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "'30' is not a duration: give it a unit, as in 30s" in refused.value.message
