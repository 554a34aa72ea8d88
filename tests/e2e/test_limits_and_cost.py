"""Limits and cost through the proxy: two replicas sharing Redis, the real openai SDK."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import services
import tiktoken

from proxy.typedefs import LIMITS
from shared.config import RedisSettings
from shared.redispipe import Pipe
from tests.e2e.conftest import KEYS, Gateway, Start, write_pricing

# Prices of the model the tests bill by (PRICING_FILE), chosen so that costs are easy to check.
MODEL = "priced-model"
INPUT, OUTPUT, CACHED = 1e-4, 1e-3, 2.5e-5
MESSAGES = [{"role": "user", "content": "hello there friend"}]
# What the fake upstream reports for MESSAGES: 3 words + 3 per message, and 5 words back.
PROMPT_TOKENS, COMPLETION_TOKENS = 6, 5
CHAT_COST = PROMPT_TOKENS * INPUT + COMPLETION_TOKENS * OUTPUT


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path,
        {
            MODEL: {
                "input_cost_per_token": INPUT,
                "output_cost_per_token": OUTPUT,
                "cache_read_input_token_cost": CACHED,
            }
        },
    )


async def chat(client: openai.AsyncOpenAI, **options: Any) -> Any:
    return await client.chat.completions.create(model=MODEL, messages=MESSAGES, **options)


async def test_concurrent_requests_on_two_replicas_admit_exactly_the_rate_limit(
    priced: Gateway,
) -> None:
    raw, _ = await priced.create_key(rateLimitOverTime=5, rateLimitUnit="m")
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    outcomes = await asyncio.gather(
        *(chat(clients[i % 2]) for i in range(20)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(outcomes) - len(refused) == 5
    for error in refused:
        assert isinstance(error, openai.RateLimitError)
        assert (error.type, error.code) == ("requests", "rate_limit_exceeded")
        # Bucketed windows may hold a request for one bucket (1/60 of the unit) longer.
        assert 1 <= int(error.response.headers["Retry-After"]) <= 61


async def test_admitted_answers_carry_the_key_rate_headers(priced: Gateway) -> None:
    raw, _ = await priced.create_key(rateLimitOverTime=10, rateLimitUnit="h")
    client = priced.client(raw)
    first = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    second = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert first.headers["x-ratelimit-limit-requests"] == "10"
    assert first.headers["x-ratelimit-remaining-requests"] == "9"
    assert second.headers["x-ratelimit-remaining-requests"] == "8"


async def test_bursts_across_a_window_boundary_never_exceed_the_limit(priced: Gateway) -> None:
    raw, _ = await priced.create_key(rateLimitOverTime=3, rateLimitUnit="s")
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    admitted: list[tuple[float, float]] = []

    async def attempt(client: openai.AsyncOpenAI) -> None:
        sent = time.monotonic()
        try:
            await client.models.list()
        except openai.RateLimitError:
            return
        admitted.append((sent, time.monotonic()))

    for _ in range(10):
        await asyncio.gather(*(attempt(clients[i % 2]) for i in range(6)))
        await asyncio.sleep(0.25)
    assert len(admitted) >= 6  # the window slides: more than one window's worth got through
    admitted.sort()
    # Four admissions whose whole request spans fit inside one second would break the limit.
    for i in range(len(admitted) - 3):
        group = admitted[i : i + 4]
        assert max(done for _, done in group) - min(sent for sent, _ in group) >= 1.0


async def test_concurrent_requests_never_drive_spend_past_the_cost_limit(priced: Gateway) -> None:
    limit = 10 * CHAT_COST
    raw, config = await priced.create_key(costLimitInUsd=limit)
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    outcomes = await asyncio.gather(
        *(chat(clients[i % 2], max_tokens=COMPLETION_TOKENS) for i in range(40)),
        return_exceptions=True,
    )
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert served and refused
    for error in refused:
        assert isinstance(error, openai.RateLimitError)
        assert (error.type, error.code) == ("insufficient_quota", "insufficient_quota")
    spend = await priced.settled_cost(config["keyId"], len(served) * CHAT_COST)
    assert spend == pytest.approx(len(served) * CHAT_COST)
    # The last call admitted may end past the limit by at most its own cost.
    assert spend <= limit + CHAT_COST + 1e-12
    # Whatever is left of the budget is used, and a spent budget is final; a refusal while the
    # previous call's settlement is still on its way says to retry.
    while True:
        try:
            await chat(clients[0], max_tokens=COMPLETION_TOKENS)
        except openai.RateLimitError as error:
            if error.response.headers.get("x-should-retry") == "false":
                break
            assert int(error.response.headers["Retry-After"]) >= 1
            await asyncio.sleep(0.05)
    final = await priced.settled_cost(config["keyId"], 0)
    assert limit - 1e-12 <= final <= limit + CHAT_COST + 1e-12


async def test_windowed_cost_limit_refuses_with_retry_after(priced: Gateway) -> None:
    raw, config = await priced.create_key(
        costLimitInUsdOverTime=CHAT_COST * 1.5, costLimitInUsdUnit="h"
    )
    client = priced.client(raw)
    await chat(client)
    await priced.settled_cost(config["keyId"], CHAT_COST)
    await chat(client)  # 1 spent of 1.5 still leaves room for a request with no output cap
    await priced.settled_cost(config["keyId"], 2 * CHAT_COST)
    with pytest.raises(openai.RateLimitError) as raised:
        await chat(client)
    assert raised.value.code == "insufficient_quota"
    assert 1 <= int(raised.value.response.headers["Retry-After"]) <= 3660
    spend = await priced.spend(config["keyId"])
    assert spend["costInUsdOverTime"] == pytest.approx(2 * CHAT_COST)


async def test_chat_cost_with_cached_tokens(priced: Gateway) -> None:
    raw, config = await priced.create_key()
    completion = await chat(priced.client(raw), user="cached")
    usage = completion.usage
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached == PROMPT_TOKENS // 2
    expected = (PROMPT_TOKENS - cached) * INPUT + cached * CACHED + COMPLETION_TOKENS * OUTPUT
    spend = await priced.settled_cost(config["keyId"], expected)
    assert spend == pytest.approx(expected)


async def test_streamed_and_unstreamed_are_billed_alike(priced: Gateway) -> None:
    plain, plain_config = await priced.create_key()
    streamed, streamed_config = await priced.create_key()
    await chat(priced.client(plain))
    stream = await chat(priced.client(streamed), stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)  # the usage chunk stayed at the proxy
    plain_spend = await priced.settled_cost(plain_config["keyId"], CHAT_COST)
    streamed_spend = await priced.settled_cost(streamed_config["keyId"], CHAT_COST)
    assert plain_spend == pytest.approx(CHAT_COST)
    assert streamed_spend == pytest.approx(plain_spend)


async def test_embeddings_and_responses_costs(priced: Gateway) -> None:
    raw, config = await priced.create_key()
    client = priced.client(raw)
    await client.embeddings.create(model=MODEL, input=["one two", "three"])
    embedding_cost = 3 * INPUT
    await priced.settled_cost(config["keyId"], embedding_cost)
    response = await client.responses.create(model=MODEL, input="say hello now")
    assert response.usage is not None
    response_cost = response.usage.input_tokens * INPUT + response.usage.output_tokens * OUTPUT
    events = [
        e
        async for e in await client.responses.create(
            model=MODEL, input="say hello now", stream=True
        )
    ]
    assert events[-1].type == "response.completed"
    total = embedding_cost + 2 * response_cost
    spend = await priced.settled_cost(config["keyId"], total)
    assert spend == pytest.approx(total)


async def test_library_prices_bill_a_known_model(start_gateway: Start) -> None:
    gateway = await start_gateway()
    raw, config = await gateway.create_key()
    await gateway.client(raw).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    # gpt-4o-mini: 0.15 USD per million input tokens, 0.60 per million output tokens.
    expected = PROMPT_TOKENS * 0.15e-6 + COMPLETION_TOKENS * 0.6e-6
    spend = await gateway.settled_cost(config["keyId"], expected)
    assert spend == pytest.approx(expected)


async def test_unknown_model_is_served_and_billed_zero_without_a_cost_limit(
    priced: Gateway,
) -> None:
    raw, config = await priced.create_key(rateLimitOverTime=100, rateLimitUnit="m")
    completion = await priced.client(raw).chat.completions.create(
        model="no-such-model-anywhere", messages=MESSAGES
    )
    assert completion.choices[0].message.content
    await asyncio.sleep(0.2)
    assert (await priced.spend(config["keyId"]))["costInUsd"] == 0


async def test_unknown_model_is_refused_for_a_key_with_a_cost_limit(priced: Gateway) -> None:
    raw, _ = await priced.create_key(costLimitInUsd=1)
    with pytest.raises(openai.BadRequestError) as refused:
        await priced.client(raw).chat.completions.create(
            model="no-such-model-anywhere", messages=MESSAGES
        )
    assert refused.value.code == "model_not_priced"
    assert not priced.upstream.recorded


async def test_mid_stream_disconnect_is_billed_for_what_was_streamed(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    gateway.upstream.options.stream_chunks = 40
    gateway.upstream.options.stream_interval = 0.05
    raw, config = await gateway.create_key()
    url = f"{gateway.base_url()}/chat/completions"
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    received = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {raw}"}) as response,
    ):
        async for chunk in response.content.iter_any():
            received += chunk
            if received.count(b"data:") >= 6:
                break
    spend = await gateway.settled_cost(config["keyId"], 1e-9)
    # Billed: the prompt (estimated) and the few words that were streamed, not all 40.
    assert 0 < spend < PROMPT_TOKENS * INPUT * 3 + 40 * OUTPUT
    assert spend >= 3 * OUTPUT


async def test_one_admitted_request_costs_two_redis_round_trips(
    priced: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, _ = await priced.create_key(rateLimitOverTime=100, rateLimitUnit="m", costLimitInUsd=5)
    client = priced.client(raw)
    await chat(client)  # loads the scripts
    await asyncio.sleep(0.2)
    round_trips = 0
    proxy_pipe = priced.proxies[0].app[LIMITS].redis
    pipe_class = type(proxy_pipe)  # a RedisPipe, or in a cluster a ClusterPipe
    replies = pipe_class.replies

    async def counting(self: Pipe, commands: Any) -> list[Any]:
        nonlocal round_trips
        if self is proxy_pipe:  # not keymgmt's, which shares the process
            round_trips += 1  # each call is one write and one wait for its replies
        return await replies(self, commands)

    monkeypatch.setattr(pipe_class, "replies", counting)
    await chat(client)
    await asyncio.sleep(0.3)  # the settlement is flushed in the background
    # Admit and settle; and WAIT, where settle batches wait for replicas (a sentinel deployment).
    assert round_trips == 2 + bool(priced.settings.redis.wait_replicas)


async def test_patch_takes_effect_and_keeps_spend_unless_the_unit_changes(priced: Gateway) -> None:
    raw, config = await priced.create_key(costLimitInUsdOverTime=1.0, costLimitInUsdUnit="h")
    client = priced.client(raw)
    await chat(client)
    await priced.settled_cost(config["keyId"], CHAT_COST)
    path = f"{KEYS}/{config['keyId']}"
    await priced.keymgmt.patch(path, json={"costLimitInUsdOverTime": CHAT_COST / 2})
    await priced.wait_for_refresh()
    with pytest.raises(openai.RateLimitError):
        await chat(client)
    await priced.keymgmt.patch(
        path, json={"costLimitInUsdUnit": "d", "costLimitInUsdOverTime": 1.0}
    )
    await priced.wait_for_refresh()
    spend = await priced.spend(config["keyId"])
    assert spend["costInUsdOverTime"] == 0  # a new unit starts a new window
    assert spend["costInUsd"] == pytest.approx(CHAT_COST)  # lifetime spend is kept
    await chat(client)


async def test_redis_unreachable_in_closed_mode_is_a_quick_503(
    start_gateway: Start, settings: Any
) -> None:
    nowhere = RedisSettings(hosts=("127.0.0.1",), port=services.free_port(), read_timeout=0.5)
    gateway = await start_gateway(redis=nowhere, redis_outage_mode="closed")
    raw, config = await gateway.create_key(rateLimitOverTime=5, rateLimitUnit="m")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        await gateway.client(raw).models.list()
    assert time.monotonic() - started < 3
    assert raised.value.status_code == 503
    assert raised.value.code == "limits_unavailable"
    assert (await gateway.keymgmt.get(f"/api/reporting/keys/{config['keyId']}")).status == 503


def counted_cost(answer: str) -> float:
    """The cost of MESSAGES and `answer` counted as the API counts them (cl100k for this model)."""
    encoding = tiktoken.get_encoding("cl100k_base")
    prompt = 3 + 3 + len(encoding.encode("user")) + len(encoding.encode(MESSAGES[0]["content"]))
    return prompt * INPUT + len(encoding.encode(answer)) * OUTPUT


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not streamed"])
async def test_answers_without_upstream_usage_are_counted_with_tiktoken(
    start_gateway: Start, pricing_file: str, stream: bool
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    gateway.upstream.options.report_usage = False
    raw, config = await gateway.create_key()
    if stream:
        chunks = await chat(gateway.client(raw), stream=True)
        answer = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        completion = await chat(gateway.client(raw))
        assert completion.usage is None
        answer = completion.choices[0].message.content or ""
    expected = counted_cost(answer)
    spend = await gateway.settled_cost(config["keyId"], expected)
    assert spend == pytest.approx(expected)


async def test_a_call_whose_own_reservation_exceeds_a_fresh_budget_is_served(
    priced: Gateway,
) -> None:
    raw, config = await priced.create_key(costLimitInUsd=5 * CHAT_COST)
    # Its reservation (100,000 output tokens at 1e-3 USD) is 100 USD, the budget a few cents.
    await chat(priced.client(raw), max_completion_tokens=100_000)
    spend = await priced.settled_cost(config["keyId"], CHAT_COST)
    assert spend == pytest.approx(CHAT_COST)


@pytest.mark.parametrize(
    "limit",
    [
        {"costLimitInUsd": 3 * CHAT_COST},
        {"costLimitInUsdOverTime": 3 * CHAT_COST, "costLimitInUsdUnit": "h"},
    ],
    ids=["lifetime", "windowed"],
)
async def test_a_refusal_caused_by_a_call_in_flight_is_retried_by_the_sdk(
    priced: Gateway, limit: dict[str, Any]
) -> None:
    raw, config = await priced.create_key(**limit)
    priced.upstream.options.latency = 1.0
    in_flight = asyncio.ensure_future(chat(priced.client(raw), max_tokens=1000))  # reserves 1 USD
    await asyncio.sleep(0.5)
    with pytest.raises(openai.RateLimitError) as raised:
        await chat(priced.client(raw, 1))
    assert (raised.value.type, raised.value.code) == ("insufficient_quota", "insufficient_quota")
    headers = raised.value.response.headers
    assert "x-should-retry" not in headers
    assert 1 <= int(headers["Retry-After"]) <= 5
    priced.upstream.options.latency = 0.0
    retrying = openai.AsyncOpenAI(base_url=priced.base_url(1), api_key=raw, max_retries=3)
    priced.clients.append(retrying)
    await chat(retrying)  # the SDK waits out Retry-After; by then the first call has ended
    await in_flight
    spend = await priced.settled_cost(config["keyId"], 2 * CHAT_COST)
    assert spend == pytest.approx(2 * CHAT_COST)
