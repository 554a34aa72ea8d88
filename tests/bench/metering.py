"""Micro-benchmark of metering on typical small answers: `python -m tests.bench.metering`.

Times `StreamMeter.feed` over a short chat stream (one event per chunk, as upstream writes them,
with and without `"usage": null` on every chunk, with LF or CRLF line ends) and `usage_of_body`
on a small chat answer; and, where it exists, `MessageStreamMeter` over an Anthropic stream of
the same text.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
import timeit
from collections.abc import Callable

import orjson

from proxy.metering import StreamMeter, usage_of_body
from shared import tokens

WORDS = ("Hello", " from", " the", " fake", " upstream.") * 4
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}


def event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def stream(marked: bool) -> list[bytes]:
    base = {**BASE, "usage": None} if marked else BASE
    choice = {"index": 0, "logprobs": None, "finish_reason": None}
    chunks = [event({**base, "choices": [{**choice, "delta": {"content": w}}]}) for w in WORDS]
    if marked:
        chunks.append(event({**BASE, "choices": [], "usage": USAGE}))
    return [*chunks, b"data: [DONE]\n\n"]


def crlf(chunks: list[bytes]) -> list[bytes]:
    return [chunk.replace(b"\n", b"\r\n") for chunk in chunks]


ANSWER = orjson.dumps(
    {
        **BASE,
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}},
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_1",
    }
)


# Before and after the counter became a field, the benchmark builds the meter alike.
COUNTER = (
    {"count": tokens.tiktoken_counter("gpt-4o-mini")}
    if "count" in inspect.signature(StreamMeter).parameters
    else {}
)


def new_meter() -> StreamMeter:
    return StreamMeter(drop_usage_chunk=True, **COUNTER)


def feed_all(chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        meter = new_meter()
        for chunk in chunks:
            meter.feed(chunk)
        meter.flush()

    return run


def anthropic_stream() -> list[bytes]:
    def event(payload: dict[str, object]) -> bytes:
        return (
            b"event: "
            + str(payload["type"]).encode()
            + b"\ndata: "
            + orjson.dumps(payload)
            + b"\n\n"
        )

    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4"}
    start = {**message, "content": [], "usage": {**usage, "output_tokens": 1}}
    deltas = [
        event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
        )
        for w in WORDS
    ]
    return [
        event({"type": "message_start", "message": start}),
        event({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        event({"type": "ping"}),
        *deltas,
        event({"type": "content_block_stop", "index": 0}),
        event({"type": "message_delta", "delta": {}, "usage": {**usage, "output_tokens": 20}}),
        event({"type": "message_stop"}),
    ]


def feed_anthropic(chunks: list[bytes]) -> Callable[[], None]:
    from proxy.anthropic_metering import MessageStreamMeter

    def run() -> None:
        meter = MessageStreamMeter(count=COUNTER["count"])
        for chunk in chunks:
            meter.feed(chunk)
        meter.flush()

    return run


def best_microseconds(run: Callable[[], object], number: int) -> float:
    # CPU time, best of many short runs: the machine is shared, and waiting is not work.
    runs = timeit.repeat(run, number=number, repeat=30, timer=time.process_time)
    return min(runs) / number * 1e6


def main() -> None:
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "stream, usage:null on each chunk (22 events)": (feed_all(stream(True)), 500),
        "stream, no usage (21 events)": (feed_all(stream(False)), 2000),
        "stream, usage:null, CRLF line ends": (feed_all(crlf(stream(True))), 500),
        f"usage_of_body, chat answer ({len(ANSWER)} B)": (lambda: usage_of_body(ANSWER), 20000),
    }
    if importlib.util.find_spec("proxy.anthropic_metering"):
        cases["anthropic stream (26 events)"] = (feed_anthropic(anthropic_stream()), 500)
    for name, (run, number) in cases.items():
        print(f"{name:48} {best_microseconds(run, number):8.2f} µs")


if __name__ == "__main__":
    main()
