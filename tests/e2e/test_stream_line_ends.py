"""Streams whose events end in CRLF or CR (sse-starlette, llama.cpp's server) are relayed as they
come and billed from their usage, like LF streams."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.e2e.conftest import Start, write_pricing

MODEL = "priced-model"
INPUT, OUTPUT = 1e-4, 1e-3
WORDS = ("Hello", " from", " a", " CRLF", " server")
USAGE = {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 7 + len(WORDS)}
COST = 7 * INPUT + len(WORDS) * OUTPUT


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}}
    )


def line_end_upstream(line_end: bytes) -> web.Application:
    """A chat server that streams events one write each, their lines ended by `line_end`, and
    waits a moment between events: a proxy that holds events back is seen to."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": MODEL}
        payloads: list[object] = [
            {**base, "choices": [{"index": 0, "delta": {"content": word}}], "usage": None}
            for word in WORDS
        ]
        payloads.append({**base, "choices": [], "usage": USAGE})
        for payload in [*payloads, "[DONE]"]:
            data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
            await response.write(b"data: " + data + line_end + line_end)
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"], ids=["CRLF", "CR"])
async def test_a_crlf_stream_is_relayed_as_it_comes_and_billed_from_its_usage(
    start_gateway: Start,
    aiohttp_server: Any,
    pricing_file: str,
    line_end: bytes,
) -> None:
    upstream = await aiohttp_server(line_end_upstream(line_end))
    gateway = await start_gateway(
        pricing_file=pricing_file,
        openai_base_url=str(upstream.make_url("/v1")),
    )
    raw, config = await gateway.create_key()
    started = time.monotonic()
    stream = await gateway.client(raw).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    arrivals, words = [], []
    async for chunk in stream:
        arrivals.append(time.monotonic() - started)
        words.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(words) == "".join(WORDS)
    assert arrivals[0] < arrivals[-1] - 0.3  # relayed event by event, not at the end
    assert await gateway.settled_cost(config["keyId"], COST) == pytest.approx(COST)
