"""What metering holds in memory for large answers: a bound far below the answer's size."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator

import orjson

from proxy.metering import StreamMeter, Usage, usage_of_body

LONG_STREAM_TOKENS = 32_000
EMBEDDING_INPUTS, DIMENSIONS = 2048, 256
BOUND = 1024**2  # far below the ~8 MB of a 32k-token stream, or the parsed embeddings


def peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def long_stream(with_usage: bool) -> Iterator[bytes]:
    """A 32k-token chat stream, each chunk marked with `"usage": null` as the real API does."""
    head = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    head += b'"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,'
    for n in range(LONG_STREAM_TOKENS):
        yield head + b'"delta":{"content":" w%d"},"logprobs":null,' % (n % 10)
        yield b'"finish_reason":null}],"usage":null}\n\n'
    if with_usage:
        usage = {"prompt_tokens": 5, "completion_tokens": LONG_STREAM_TOKENS}
        yield b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def meter_a_long_stream(with_usage: bool) -> StreamMeter:
    meter = StreamMeter(drop_usage_chunk=True, count=len)  # a token per character
    for chunk in long_stream(with_usage):
        meter.feed(chunk)
    meter.flush()
    return meter


def test_a_long_stream_is_metered_in_bounded_memory() -> None:
    meters: list[StreamMeter] = []
    assert peak_bytes(lambda: meters.append(meter_a_long_stream(with_usage=True))) < BOUND
    assert meters[0].usage == Usage(5, LONG_STREAM_TOKENS)


def test_a_long_stream_without_usage_is_counted_in_bounded_memory() -> None:
    meters: list[StreamMeter] = []
    assert peak_bytes(lambda: meters.append(meter_a_long_stream(with_usage=False))) < BOUND
    assert meters[0].completion_tokens() == len(" w0") * LONG_STREAM_TOKENS


def embeddings_answer() -> bytes:
    """A float embeddings answer as the API writes it: usage last, after data and model."""
    vector = orjson.dumps([-0.0123456789 + i * 1e-6 for i in range(DIMENSIONS)])
    items = b",".join(
        b'{"object":"embedding","index":%d,"embedding":%s}' % (i, vector)
        for i in range(EMBEDDING_INPUTS)
    )
    usage = b'{"prompt_tokens":4096,"total_tokens":4096}'
    return (
        (b'{"object":"list","data":[' + items + b'],"model":"text-embedding-3-small","usage":')
        + usage
        + b"}"
    )


def test_the_usage_of_a_large_json_answer_is_found_in_bounded_memory() -> None:
    body = embeddings_answer()
    assert len(body) > 8 * BOUND
    found: list[object] = []
    assert peak_bytes(lambda: found.append(usage_of_body(body))) < BOUND
    assert found == [(Usage(4096, 0), "text-embedding-3-small")]
