"""A client that leaves mid-call: upstream bills a non-streamed answer in full, so does the key."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk

from proxy.__main__ import HANDLER_CANCELLATION
from shared import tokens
from tests.e2e.conftest import Gateway, Start, write_pricing

MODEL = "priced-model"
INPUT, OUTPUT = 1e-4, 1e-3
MESSAGES = [{"role": "user", "content": "hello there friend"}]
# What the fake upstream reports for MESSAGES: 3 words + 3 per message, and 5 words back.
CHAT_COST = 6 * INPUT + 5 * OUTPUT


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}}
    )


async def test_the_test_proxy_cancels_handlers_as_production_does(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    runner = gateway.proxies[0].runner
    assert runner is not None and runner.server is not None
    assert runner.server.handler_cancellation is HANDLER_CANCELLATION is True


async def test_a_client_that_times_out_is_billed_every_answer_upstream_made(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    gateway.upstream.options.latency = 0.8  # each answer takes longer than the client waits
    raw, config = await gateway.create_key()
    # An SDK whose timeout is shorter than the call, retrying twice (one of the cases).
    client = openai.AsyncOpenAI(
        base_url=gateway.base_url(), api_key=raw, timeout=0.25, max_retries=2
    )
    gateway.clients.append(client)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    chat_calls = [r for r in gateway.upstream.recorded if r.path == "/v1/chat/completions"]
    assert len(chat_calls) == 3  # the first try and two retries, each answered in full upstream
    spend = await gateway.settled_cost(config["keyId"], 3 * CHAT_COST, within=3.0)
    assert spend == pytest.approx(3 * CHAT_COST)


async def slow_stream(
    start_gateway: Start, pricing_file: str
) -> tuple[Gateway, dict[str, Any], AsyncStream[ChatCompletionChunk]]:
    """A key's stream of 40 words, one every 50 ms: a client can leave it part-way."""
    gateway = await start_gateway(pricing_file=pricing_file)
    gateway.upstream.options.stream_chunks = 40
    gateway.upstream.options.stream_interval = 0.05
    raw, config = await gateway.create_key()
    stream = await gateway.client(raw).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    return gateway, config, stream


async def test_a_stream_the_client_leaves_is_billed_for_what_was_streamed(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway, config, stream = await slow_stream(start_gateway, pricing_file)
    received = 0
    async for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 5:
            break
    await stream.close()  # the connection goes with it: the client has left
    spend = await gateway.settled_cost(config["keyId"], 1e-9, within=2.0)
    # The prompt (estimated by tiktoken: about 11 tokens) and the words that passed, not all 40.
    assert 5 * OUTPUT <= spend < 20 * INPUT + 30 * OUTPUT
    await asyncio.sleep(2.5)  # long after upstream would have finished the 40 words
    assert float((await gateway.spend(config["keyId"]))["costInUsd"]) == spend


async def test_a_cut_stream_is_counted_off_the_event_loop(
    start_gateway: Start, pricing_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a long prompt takes a large part of a second: on the loop it would stall every
    call of the replica, and a key holder could do it at will by leaving streams early."""
    counted_in: set[str] = set()
    count_text = tokens.count_text

    def noting_count_text(text: str, model: str) -> int:
        counted_in.add(threading.current_thread().name)
        return count_text(text, model)

    monkeypatch.setattr(tokens, "count_text", noting_count_text)
    gateway, config, stream = await slow_stream(start_gateway, pricing_file)
    async for _ in stream:
        break
    await stream.close()
    assert await gateway.settled_cost(config["keyId"], 1e-9, within=2.0) > 0
    assert counted_in and threading.current_thread().name not in counted_in
