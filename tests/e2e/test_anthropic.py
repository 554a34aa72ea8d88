"""The official anthropic SDK through the proxy's anthropic path, to the fake Messages API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import pytest

from proxy.fakeupstream.anthropic import OVERLOADED_MID_STREAM, RATE_LIMITED, TOOL_TRIGGER
from tests.e2e.conftest import KEYS, Gateway, Start, write_pricing
from tests.e2e.test_providers import create_setting

MODEL = "claude-3-5-haiku-latest"
# Each kind of token at its own price, so that a mix-up shows in the cost.
PRICES = {
    MODEL: {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 5e-6,
        "cache_read_input_token_cost": 1e-7,
        "cache_creation_input_token_cost": 1.25e-6,
    }
}
SECRET = "sk-ant-upstream-secret-0042"
HELLO: Any = [{"role": "user", "content": "Say hello to the whole wide world"}]
CACHED: list[Any] = [
    {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "a long document " * 20,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "more context " * 10, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "and the question"},
        ],
    }
]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(tmp_path, PRICES)


def upstream_root(gateway: Gateway) -> str:
    return gateway.settings.openai_base_url.removesuffix("/v1")


async def anthropic_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    setting = await create_setting(
        gateway, "anthropic", {"apikey": SECRET, "baseUrl": upstream_root(gateway)}
    )
    raw, config = await gateway.create_key(settingIds=[setting["id"]], **fields)
    return raw, config["keyId"]


def client_of(gateway: Gateway, api_key: str, replica: int = 0) -> anthropic.AsyncAnthropic:
    url = str(gateway.proxies[replica].make_url("/api/providers/anthropic"))
    return anthropic.AsyncAnthropic(base_url=url, api_key=api_key, max_retries=0)


def cost_of(usage: Any) -> float:
    prices = PRICES[MODEL]
    return (
        usage.input_tokens * prices["input_cost_per_token"]
        + (usage.cache_read_input_tokens or 0) * prices["cache_read_input_token_cost"]
        + (usage.cache_creation_input_tokens or 0) * prices["cache_creation_input_token_cost"]
        + usage.output_tokens * prices["output_cost_per_token"]
    )


async def test_a_message_is_answered_and_billed_each_token_kind_at_its_price(
    priced: Gateway,
) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    async with client_of(priced, raw) as client:
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=CACHED)
    usage = message.usage
    assert usage.cache_read_input_tokens and usage.cache_creation_input_tokens  # every kind
    expected = cost_of(usage)
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)
    [seen] = [r for r in priced.upstream.recorded if r.path == "/v1/messages"]
    assert seen.headers["x-api-key"] == SECRET
    assert raw not in str(seen.headers) and raw.encode() not in seen.body


async def test_a_stream_is_billed_like_the_same_message_unstreamed(priced: Gateway) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    async with client_of(priced, raw) as client:
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=CACHED)
        expected = cost_of(message.usage)
        await priced.settled_cost(key_id, expected)
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=CACHED) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    assert text == message.content[0].text  # type: ignore[union-attr]
    assert cost_of(final.usage) == pytest.approx(expected)
    assert await priced.settled_cost(key_id, 2 * expected) == pytest.approx(2 * expected)


async def test_the_sync_client_streamed_and_not(priced: Gateway) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    url = str(priced.proxies[1].make_url("/api/providers/anthropic"))

    def converse() -> tuple[Any, str]:  # in a thread: the gateway runs on this test's loop
        with anthropic.Anthropic(base_url=url, api_key=raw, max_retries=0) as client:
            message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
            with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
                return message, "".join(stream.text_stream)

    message, streamed = await asyncio.to_thread(converse)
    assert streamed == message.content[0].text
    expected = 2 * cost_of(message.usage)
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_tool_use_streamed_and_not(priced: Gateway) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    asked: Any = [{"role": "user", "content": f"Please {TOOL_TRIGGER} for Paris"}]
    async with client_of(priced, raw) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=64, messages=asked, tools=[WEATHER_TOOL]
        )
        assert message.stop_reason == "tool_use"
        [tool_use] = [block for block in message.content if block.type == "tool_use"]
        async with client.messages.stream(
            model=MODEL, max_tokens=64, messages=asked, tools=[WEATHER_TOOL]
        ) as stream:
            final = await stream.get_final_message()
    [streamed_use] = [block for block in final.content if block.type == "tool_use"]
    assert streamed_use.input == tool_use.input
    expected = 2 * cost_of(message.usage)
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_an_overloaded_error_mid_stream_reaches_the_sdk_and_what_streamed_is_billed(
    priced: Gateway,
) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    asked: Any = [{"role": "user", "content": f"Tell me a story {OVERLOADED_MID_STREAM}"}]
    async with client_of(priced, raw) as client:
        with pytest.raises(anthropic.APIStatusError) as failed:
            async with client.messages.stream(model=MODEL, max_tokens=64, messages=asked) as s:
                async for _ in s.text_stream:
                    pass
    assert "overloaded" in str(failed.value).lower()
    # message_start's input and the text that did stream: more than nothing.
    assert await priced.settled_cost(key_id, 1e-9) > 0


async def test_gateway_errors_have_anthropics_shape_for_the_sdk(priced: Gateway) -> None:
    async with client_of(priced, "sk-gw-unknown") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    raw, _ = await priced.create_key()  # no anthropic setting
    async with client_of(priced, raw) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert "no anthropic provider setting" in str(refused.value)
    limited, _ = await anthropic_key(priced, rateLimitOverTime=1, rateLimitUnit="m")
    async with client_of(priced, limited) as client:
        await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


async def test_upstreams_own_errors_pass_to_the_sdk(priced: Gateway) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    asked: Any = [{"role": "user", "content": f"hi {RATE_LIMITED}"}]
    async with client_of(priced, raw) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=asked)
    assert await priced.settled_cost(key_id, 0.0) == 0.0  # nothing answered, nothing billed


async def test_limits_hold_on_the_anthropic_path(priced: Gateway) -> None:
    raw, _ = await anthropic_key(priced, rateLimitOverTime=2, rateLimitUnit="m")
    for replica in (0, 1):
        async with client_of(priced, raw, replica) as client:
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    async with client_of(priced, raw) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    budget, budget_id = await anthropic_key(priced, costLimitInUsd=1e-4)
    costs = []
    async with client_of(priced, budget) as client:
        with pytest.raises(anthropic.RateLimitError):
            for _ in range(20):
                answer = await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
                costs.append(cost_of(answer.usage))
                await priced.settled_cost(budget_id, sum(costs))
    # Admitted while the spend was below the limit, as on every provider: the last call may
    # pass it by at most its own cost.
    assert 1e-4 <= sum(costs) < 1e-4 + costs[-1]
    revoked, revoked_id = await anthropic_key(priced)
    response = await priced.keymgmt.patch(f"{KEYS}/{revoked_id}", json={"revoked": True})
    assert response.status == 200
    await asyncio.sleep(0.5)
    async with client_of(priced, revoked) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


async def test_an_expired_key_is_refused_on_the_anthropic_path(priced: Gateway) -> None:
    raw, _ = await anthropic_key(priced, ttl="1s")
    async with client_of(priced, raw) as client:
        await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        await asyncio.sleep(1.2)
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


async def test_count_tokens_and_models_pass_through_unbilled(priced: Gateway) -> None:
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    async with client_of(priced, raw) as client:
        counted = await client.messages.count_tokens(model=MODEL, messages=HELLO)
        models = await client.models.list()
    assert counted.input_tokens > 0
    assert any(model.id.startswith("claude") for model in models.data)
    assert await priced.settled_cost(key_id, 0.0, within=0.3) == 0.0


async def test_version_and_beta_headers_reach_upstream(start_gateway: Start) -> None:
    gateway = await start_gateway()
    raw, _ = await anthropic_key(gateway)
    async with client_of(gateway, raw) as client:
        await client.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=HELLO,
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        )
    [seen] = [r for r in gateway.upstream.recorded if r.path == "/v1/messages"]
    assert seen.headers["anthropic-version"]
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"


async def test_a_stream_the_client_leaves_is_billed_its_input_and_what_streamed(
    priced: Gateway,
) -> None:
    priced.upstream.options.stream_chunks = 40
    priced.upstream.options.stream_interval = 0.05
    raw, key_id = await anthropic_key(priced, costLimitInUsd=10)
    prices = PRICES[MODEL]
    async with client_of(priced, raw) as client:
        whole = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
        paid = await priced.settled_cost(key_id, cost_of(whole.usage))
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            received = 0
            async for _ in stream.text_stream:
                received += 1
                if received == 5:
                    break
    # message_start's input, and the words that passed (counted), not the 40 upstream had.
    least = (
        whole.usage.input_tokens * prices["input_cost_per_token"]
        + 5 * prices["output_cost_per_token"]
    )
    spend = await priced.settled_cost(key_id, paid + least, within=3.0) - paid
    assert least <= spend < least + 20 * prices["output_cost_per_token"]
    await asyncio.sleep(2.5)  # long after upstream would have sent the 40 words
    assert float((await priced.spend(key_id))["costInUsd"]) == pytest.approx(paid + spend)
