"""Usage of Anthropic answers, read from the fake upstream's real JSON and SSE bytes."""

from __future__ import annotations

import asyncio
import itertools
from functools import cache
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from proxy.anthropic_metering import MessageStreamMeter, message_usage, usage_of_message
from proxy.costs import token_cost
from proxy.fakeupstream import create_fake_upstream
from proxy.fakeupstream.anthropic import OVERLOADED_MID_STREAM
from proxy.metering import Usage
from shared import tokens
from shared.pricing import Pricing, Rates

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
EPHEMERAL = {"type": "ephemeral"}
# Cache reads 4 (the first breakpoint), writes 8 (to the second), 2 input tokens after it.
CACHED_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 50,
    "system": [
        {"type": "text", "text": "one two three four", "cache_control": EPHEMERAL},
        {"type": "text", "text": "five six"},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a b c", "cache_control": EPHEMERAL},
                {"type": "text", "text": "d e"},
            ],
        }
    ],
}
EXPECTED = Usage(prompt_tokens=14, completion_tokens=5, cached_tokens=4, cache_creation_tokens=8)
TOOL_BODY: dict[str, Any] = {
    "model": "claude-3-5-haiku-20241022",
    "max_tokens": 50,
    "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    "messages": [{"role": "user", "content": "Please call a tool"}],
}


@cache
def fake_answer(body_json: bytes, stream: bool) -> bytes:
    """The fake upstream's answer to a body, as bytes on the wire."""

    async def fetch() -> bytes:
        async with TestClient(TestServer(create_fake_upstream())) as client:
            body = {**orjson.loads(body_json), "stream": stream}
            response = await client.post("/v1/messages", json=body, headers=HEADERS)
            assert response.status == 200
            return await response.read()

    return asyncio.run(fetch())


def answer(body: dict[str, Any], stream: bool) -> bytes:
    return fake_answer(orjson.dumps(body), stream)


def meter() -> MessageStreamMeter:
    return MessageStreamMeter(count=len)  # a token per character


def relay(pieces: list[bytes], into: MessageStreamMeter) -> bytes:
    return b"".join(into.feed(piece) for piece in pieces) + into.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_usage_of_a_json_answer() -> None:
    usage, model = usage_of_message(answer(CACHED_BODY, stream=False))
    assert usage == EXPECTED
    assert model == "claude-sonnet-4-20250514"


def test_usage_of_something_else() -> None:
    assert usage_of_message(b"not json") == (None, "")
    assert usage_of_message(b'{"usage": 3}') == (None, "")
    assert message_usage({"input_tokens": -1, "output_tokens": "5"}) == Usage()


@pytest.mark.parametrize("body", [CACHED_BODY, TOOL_BODY], ids=["text", "tool_use"])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_stream_cut_at_every_byte_boundary_gives_the_json_usage(
    body: dict[str, Any], line_end: bytes
) -> None:
    whole, model = usage_of_message(answer(body, stream=False))
    stream = answer(body, stream=True).replace(b"\n", line_end)
    for cut in range(len(stream) + 1):
        metered = meter()
        assert relay([stream[:cut], stream[cut:]], metered) == stream
        assert (metered.usage, metered.model) == (whole, model)
    byte_by_byte = meter()
    assert relay([stream[i : i + 1] for i in range(len(stream))], byte_by_byte) == stream
    assert byte_by_byte.usage == whole


@given(st.lists(st.integers(min_value=0), max_size=40), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_usage_and_bytes(cuts: list[int], line_end: bytes) -> None:
    stream = answer(CACHED_BODY, stream=True).replace(b"\n", line_end)
    metered = meter()
    assert relay(split(stream, cuts), metered) == stream
    assert metered.usage == EXPECTED


def test_message_delta_without_input_counts_takes_them_from_message_start() -> None:
    # The older shape: message_delta's usage has output_tokens only (or nulls).
    events = answer(CACHED_BODY, stream=True).split(b"\n\n")
    older = []
    for event in events:
        if b"message_delta" in event:
            head, _, data = event.partition(b"data: ")
            payload = orjson.loads(data)
            payload["usage"] = {"output_tokens": 5, "input_tokens": None}
            event = head + b"data: " + orjson.dumps(payload)
        older.append(event)
    metered = meter()
    metered.feed(b"\n\n".join(older))
    assert metered.usage == EXPECTED


def test_a_stream_cut_before_message_delta_bills_start_input_and_counted_output() -> None:
    stream = answer(CACHED_BODY, stream=True)
    cut = stream.index(b"event: content_block_stop")
    metered = meter()
    metered.feed(stream[:cut])
    assert metered.usage is None
    assert metered.completion_tokens() == len("Hello from the fake upstream.")
    cut_usage = metered.usage_when_cut(lambda: pytest.fail("message_start said it"))
    assert cut_usage == Usage(14, len("Hello from the fake upstream."), 4, cache_creation_tokens=8)


def test_an_overload_mid_stream_is_billed_for_what_was_streamed() -> None:
    body = {**CACHED_BODY, "messages": [{"role": "user", "content": OVERLOADED_MID_STREAM}]}
    stream = answer(body, stream=True)
    assert b"event: error" in stream
    metered = meter()
    assert relay([stream], metered) == stream
    assert metered.usage is None
    billed = metered.usage_when_cut(lambda: 0)
    assert billed.completion_tokens == len("Hello from")
    assert billed.prompt_tokens == 3 + 1 + 4 + 2  # system, message framing, its one word


def test_a_stream_cut_before_message_start_is_estimated() -> None:
    metered = meter()
    metered.feed(b"event: ping\ndata: {}\n\n")
    assert metered.usage_when_cut(lambda: 42) == Usage(42, 0)


def test_tool_input_is_counted_as_output() -> None:
    stream = answer(TOOL_BODY, stream=True)
    metered = meter()
    metered.feed(stream[: stream.index(b"event: content_block_stop")])
    assert metered.completion_tokens() == len('{"query": "fake"}')


def test_a_tiktoken_counter_counts_claude_text() -> None:
    stream = answer(CACHED_BODY, stream=True)
    metered = MessageStreamMeter(count=tokens.tiktoken_counter("claude-sonnet-4"))
    metered.feed(stream[: stream.index(b"event: message_delta")])
    assert metered.completion_tokens() == tokens.count_text(
        "Hello from the fake upstream.", "claude-sonnet-4"
    )


# --- pricing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "per_million"),
    [
        # genai-prices: input, cache write (5 minutes), cache read, output; USD per million.
        ("claude-sonnet-4", (3.0, 3.75, 0.3, 15.0)),
        ("claude-sonnet-4-20250514", (3.0, 3.75, 0.3, 15.0)),
        ("claude-3-5-haiku-latest", (0.8, 1.0, 0.08, 4.0)),
    ],
)
def test_each_anthropic_usage_field_at_its_own_price(
    model: str, per_million: tuple[float, float, float, float]
) -> None:
    rates = Pricing().rates(model, provider="anthropic")
    assert rates is not None
    input_price, write_price, read_price, output_price = (p / 1e6 for p in per_million)
    usage = message_usage(
        {
            "input_tokens": 1000,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 30000,
            "output_tokens": 400,
        }
    )
    assert usage is not None and usage.prompt_tokens == 33000
    assert token_cost(rates, usage) == pytest.approx(
        1000 * input_price + 2000 * write_price + 30000 * read_price + 400 * output_price
    )


def test_anthropic_models_need_their_provider() -> None:
    assert Pricing().rates("claude-3-5-haiku-latest") is None  # OpenAI does not sell it


def test_a_cache_write_without_a_price_is_at_the_input_price() -> None:
    rates = Rates(input=1.0, output=10.0, cached_input=0.25)
    assert rates.cost(10, 1, 2, cache_write_tokens=3) == 5 * 1.0 + 2 * 0.25 + 3 * 1.0 + 10
    openai = Pricing().rates("gpt-4o")
    assert openai is not None and openai.cache_write == pytest.approx(openai.input)
    priced = Rates(input=1.0, output=10.0, cached_input=0.25, cache_write=1.25)
    assert priced.cost(10, 1, 2, cache_write_tokens=3) == 5 * 1.0 + 2 * 0.25 + 3 * 1.25 + 10
    # Parts never add up to more than the prompt.
    assert priced.cost(4, 0, 2, cache_write_tokens=3) == 2 * 0.25 + 2 * 1.25
