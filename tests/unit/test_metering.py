"""Usage read from SSE streams, whatever the chunk boundaries."""

from __future__ import annotations

import itertools
from unittest.mock import patch

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import metering
from proxy.metering import (
    MAX_EVENT_BYTES,
    StreamMeter,
    Usage,
    answer_text,
    parse_usage,
    usage_of_body,
)
from shared import tokens


def sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(content: str | None = None, tool_args: str | None = None) -> dict[str, object]:
    delta: dict[str, object] = {}
    if content is not None:
        delta["content"] = content
    if tool_args is not None:
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": tool_args}}]
    return {
        "object": "chat.completion.chunk",
        "model": "m-1",
        "choices": [{"index": 0, "delta": delta}],
        "usage": None,
    }


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 4}}
USAGE_EVENT = sse(
    {"object": "chat.completion.chunk", "model": "m-1", "choices": [], "usage": USAGE}
)
CONTENT_EVENTS = [
    sse(chunk("Hel")),
    sse(chunk("lo")),
    sse(chunk(tool_args='{"a":')),
    sse(chunk(tool_args="1}")),
]
STREAM = b"".join(CONTENT_EVENTS) + USAGE_EVENT + b"data: [DONE]\n\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def meter_for(drop_usage_chunk: bool) -> StreamMeter:
    return StreamMeter(drop_usage_chunk=drop_usage_chunk, count=len)  # a token per character


def streamed(meter: StreamMeter) -> int:
    return meter.completion_tokens()


def streamed_of_lf(stream: bytes) -> int:
    meter = meter_for(drop_usage_chunk=True)
    meter.feed(stream)
    return streamed(meter)


def relay(meter: StreamMeter, pieces: list[bytes]) -> bytes:
    return b"".join(meter.feed(piece) for piece in pieces) + meter.flush()


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_usage_and_bytes(cuts: list[int]) -> None:
    meter = meter_for(drop_usage_chunk=True)
    relayed = relay(meter, split(STREAM, cuts))
    assert meter.usage == Usage(11, 7, 4)
    assert meter.model == "m-1"
    assert relayed == STREAM.replace(USAGE_EVENT, b"")


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_a_client_that_asked_for_usage_keeps_the_chunk(cuts: list[int]) -> None:
    meter = meter_for(drop_usage_chunk=False)
    assert relay(meter, split(STREAM, cuts)) == STREAM
    assert meter.usage == Usage(11, 7, 4)


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_without_usage_the_streamed_text_is_kept_for_counting(cuts: list[int]) -> None:
    stream = b"".join(CONTENT_EVENTS) + b"data: [DONE]\n\n"
    meter = meter_for(drop_usage_chunk=True)
    assert relay(meter, split(stream, cuts)) == stream
    assert meter.usage is None
    assert meter.completion_tokens() == len('Hello{"a":1}')


def test_responses_stream_usage_comes_from_the_completed_event() -> None:
    events = [
        b"event: response.output_text.delta\n"
        + sse({"type": "response.output_text.delta", "delta": "Hi"}),
        b"event: response.completed\n"
        + sse(
            {
                "type": "response.completed",
                "response": {
                    "model": "r-1",
                    "usage": {
                        "input_tokens": 9,
                        "output_tokens": 2,
                        "input_tokens_details": {"cached_tokens": 1},
                    },
                },
            }
        ),
    ]
    meter = meter_for(drop_usage_chunk=False)
    assert relay(meter, events) == b"".join(events)
    assert meter.usage == Usage(9, 2, 1)
    assert meter.model == "r-1"


def test_a_cut_responses_stream_keeps_its_text() -> None:
    meter = meter_for(drop_usage_chunk=False)
    meter.feed(sse({"type": "response.output_text.delta", "delta": "Hi there"}))
    assert meter.completion_tokens() == len("Hi there")


def test_usage_shapes_and_garbage() -> None:
    assert parse_usage({"prompt_tokens": 3, "completion_tokens": 2}) == Usage(3, 2, 0)
    assert parse_usage({"prompt_tokens": 3, "total_tokens": 3}) == Usage(3, 0, 0)
    assert parse_usage({"prompt_tokens": -3, "completion_tokens": "2"}) == Usage(0, 0, 0)
    assert parse_usage(None) is None
    assert usage_of_body(b"not json") == (None, "")
    assert usage_of_body(b'{"model": "x", "usage": {"prompt_tokens": 1}}') == (Usage(1, 0, 0), "x")


def test_answer_text_of_each_shape() -> None:
    chat = {
        "choices": [
            {"message": {"content": "Hi", "tool_calls": [{"function": {"arguments": "{}"}}]}}
        ]
    }
    legacy = {"choices": [{"text": "Once"}]}
    responses = {"output": [{"content": [{"type": "output_text", "text": "Yes"}]}]}
    assert answer_text(orjson.dumps(chat)) == "Hi{}"
    assert answer_text(orjson.dumps(legacy)) == "Once"
    assert answer_text(orjson.dumps(responses)) == "Yes"
    assert answer_text(b"[1, 2]") == ""


LINE_ENDS = st.sampled_from([b"\r\n", b"\r"])


def with_line_end(data: bytes, end: bytes) -> bytes:
    return data.replace(b"\n", end)


@given(LINE_ENDS, st.lists(st.integers(min_value=0), max_size=30))
def test_crlf_and_cr_streams_are_metered_like_lf_ones(end: bytes, cuts: list[int]) -> None:
    stream = with_line_end(STREAM, end)
    meter = meter_for(drop_usage_chunk=True)
    relayed = relay(meter, split(stream, cuts))
    assert meter.usage == Usage(11, 7, 4)
    assert meter.model == "m-1"
    assert relayed == stream.replace(with_line_end(USAGE_EVENT, end), b"")


@given(LINE_ENDS, st.lists(st.integers(min_value=0), max_size=30))
def test_crlf_and_cr_streams_without_usage_count_the_same_text(end: bytes, cuts: list[int]) -> None:
    stream = with_line_end(b"".join(CONTENT_EVENTS) + b"data: [DONE]\n\n", end)
    meter = meter_for(drop_usage_chunk=True)
    assert relay(meter, split(stream, cuts)) == stream
    assert meter.usage is None
    assert streamed(meter) == streamed_of_lf(b"".join(CONTENT_EVENTS))


def test_a_crlf_event_is_relayed_as_soon_as_it_ends() -> None:
    meter = meter_for(drop_usage_chunk=False)
    event = with_line_end(CONTENT_EVENTS[0], b"\r\n")
    assert meter.feed(event) == event


def test_an_event_that_never_ends_is_relayed_uninspected_past_the_limit() -> None:
    meter = meter_for(drop_usage_chunk=True)
    piece = b"x" * 65536
    endless = b"data: " + piece
    relayed = meter.feed(endless)
    for _ in range(MAX_EVENT_BYTES // len(piece) + 1):
        relayed += meter.feed(piece)
    assert len(relayed) >= MAX_EVENT_BYTES  # relayed as it comes, not held
    tail = b"\n\n" + STREAM
    relayed += b"".join(meter.feed(tail[i : i + 7]) for i in range(0, len(tail), 7))
    relayed += meter.flush()
    # After the long event ends, the next ones are inspected again.
    assert meter.usage == Usage(11, 7, 4)
    expected = endless + piece * (MAX_EVENT_BYTES // len(piece) + 1) + tail
    assert relayed == expected.replace(USAGE_EVENT, b"")


TEXT = st.text(st.sampled_from(list(" \n\t\r ab1'./!é漢😀")), max_size=12)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
@settings(deadline=None)  # the first example loads the encoding
@given(text=st.lists(TEXT | st.sampled_from([" hello", "'s", " 123", "\n\n", "\n/"])).map("".join))
def test_text_cut_at_a_pretoken_start_counts_as_the_whole(model: str, text: str) -> None:
    count = tokens.tiktoken_counter(model)
    cut = metering._last_pretoken_start(text)
    assert count(text[:cut]) + count(text[cut:]) == count(text)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
@settings(deadline=None)
@given(pieces=st.lists(TEXT.map(lambda text: text + " w"), max_size=40))
def test_long_text_counted_as_it_grows_counts_as_the_whole(model: str, pieces: list[str]) -> None:
    count = tokens.tiktoken_counter(model)
    # Every other event without the usage key, so that both kinds are kept, in their order.
    events = [chunk(piece) for piece in pieces]
    for event in events[::2]:
        del event["usage"]
    stream = b"".join(sse(event) for event in events)
    with patch.object(metering, "RAW_TEXT_BYTES", 150), patch.object(metering, "TEXT_CHARS", 20):
        meter = StreamMeter(drop_usage_chunk=True, count=count)
        for event in split(stream, list(range(0, len(stream), 97))):
            meter.feed(event)
        assert meter.completion_tokens() == count("".join(pieces))


def test_a_long_stream_counts_its_text_in_order() -> None:
    counted: list[str] = []

    def count(text: str) -> int:
        counted.append(text)
        return len(text)

    pieces = [f" w{n}" for n in range(300)]
    events = [chunk(piece) for piece in pieces]
    for event in events[::3]:
        del event["usage"]
    with patch.object(metering, "RAW_TEXT_BYTES", 500), patch.object(metering, "TEXT_CHARS", 50):
        meter = StreamMeter(drop_usage_chunk=True, count=count)
        for event in events:
            meter.feed(sse(event))
        assert meter.completion_tokens() == len("".join(pieces))
    assert len(counted) > 10  # counted as it grew
    assert "".join(counted) == "".join(pieces)
