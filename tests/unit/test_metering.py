"""Usage read from SSE streams, whatever the chunk boundaries."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.metering import StreamMeter, Usage, answer_text, parse_usage, usage_of_body


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


def relay(meter: StreamMeter, pieces: list[bytes]) -> bytes:
    return b"".join(meter.feed(piece) for piece in pieces) + meter.flush()


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_usage_and_bytes(cuts: list[int]) -> None:
    meter = StreamMeter(drop_usage_chunk=True)
    relayed = relay(meter, split(STREAM, cuts))
    assert meter.usage == Usage(11, 7, 4)
    assert meter.model == "m-1"
    assert relayed == STREAM.replace(USAGE_EVENT, b"")


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_a_client_that_asked_for_usage_keeps_the_chunk(cuts: list[int]) -> None:
    meter = StreamMeter(drop_usage_chunk=False)
    assert relay(meter, split(STREAM, cuts)) == STREAM
    assert meter.usage == Usage(11, 7, 4)


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_without_usage_the_streamed_text_is_kept_for_counting(cuts: list[int]) -> None:
    stream = b"".join(CONTENT_EVENTS) + b"data: [DONE]\n\n"
    meter = StreamMeter(drop_usage_chunk=True)
    assert relay(meter, split(stream, cuts)) == stream
    assert meter.usage is None
    assert meter.streamed_text() == 'Hello{"a":1}'


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
    meter = StreamMeter(drop_usage_chunk=False)
    assert relay(meter, events) == b"".join(events)
    assert meter.usage == Usage(9, 2, 1)
    assert meter.model == "r-1"


def test_a_cut_responses_stream_keeps_its_text() -> None:
    meter = StreamMeter(drop_usage_chunk=False)
    meter.feed(sse({"type": "response.output_text.delta", "delta": "Hi there"}))
    assert meter.streamed_text() == "Hi there"


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
