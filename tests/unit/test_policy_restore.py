"""Placeholders put back into answers: JSON, and streams however they are cut."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policies.restore import Restorer, StreamRestorer

VALUES = {"[EMAIL_1]": "jane@example.com", "[PHONE_1]": "555-234-5678", "[CUSTOM_1]": 'a"b\\c'}
RESTORER = Restorer(VALUES)
TEXT = "Write to [EMAIL_1] or call [PHONE_1]; id [CUSTOM_1], not [EMAIL_9] nor [EMA."
RESTORED = 'Write to jane@example.com or call 555-234-5678; id a"b\\c, not [EMAIL_9] nor [EMA.'


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(payload: Any, event: str = "") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def openai_stream(size: int) -> bytes:
    chunks = [sse({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    for piece in pieces(TEXT, size):
        chunks.append(sse({"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]}))
    chunks.append(sse({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return b"".join(chunks) + b"data: [DONE]\n\n"


def anthropic_stream(size: int) -> bytes:
    chunks = [
        sse({"type": "message_start", "message": {"id": "m", "content": []}}, "message_start"),
        sse({"type": "content_block_start", "index": 0}, "content_block_start"),
    ]
    for piece in pieces(TEXT, size):
        delta = {"type": "content_block_delta", "index": 0}
        chunks.append(sse({**delta, "delta": {"type": "text_delta", "text": piece}}, delta["type"]))
    chunks.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    chunks.append(sse({"type": "message_stop"}, "message_stop"))
    return b"".join(chunks)


def events(stream: bytes) -> list[tuple[str, Any]]:
    parsed = []
    for event in stream.split(b"\n\n"):
        if not event:
            continue
        lines = event.split(b"\n")
        name = next((line[7:].decode() for line in lines if line.startswith(b"event: ")), "")
        data = next(line[6:] for line in lines if line.startswith(b"data: "))
        parsed.append((name, None if data == b"[DONE]" else orjson.loads(data)))
    return parsed


def openai_text(stream: bytes) -> str:
    return "".join(
        payload["choices"][0]["delta"].get("content", "")
        for _, payload in events(stream)
        if payload is not None and payload["choices"]
    )


def anthropic_text(stream: bytes) -> str:
    return "".join(
        payload["delta"]["text"]
        for name, payload in events(stream)
        if name == "content_block_delta" and payload["delta"]["type"] == "text_delta"
    )


def relay(stream: bytes, cuts: list[int]) -> bytes:
    restorer = StreamRestorer(RESTORER)
    out = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out.append(restorer.feed(stream[previous:cut]))
        previous = cut
    out.append(restorer.flush())
    return b"".join(out)


def test_json_answers_get_their_values_back_escaped() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": TEXT}}]})
    assert orjson.loads(RESTORER.json(body))["choices"][0]["message"]["content"] == RESTORED


def test_openai_stream_cut_at_every_byte() -> None:
    for size in (1, 7):
        stream = openai_stream(size)
        for cut in range(len(stream) + 1):
            relayed = relay(stream, [cut])
            assert openai_text(relayed) == RESTORED, (size, cut)
            assert events(relayed)[-1] == ("", None)  # [DONE] still last


def test_anthropic_stream_cut_at_every_byte() -> None:
    for size in (1, 4):
        stream = anthropic_stream(size)
        for cut in range(len(stream) + 1):
            relayed = relay(stream, [cut])
            assert anthropic_text(relayed) == RESTORED, (size, cut)
            names = [name for name, _ in events(relayed)]
            assert names[-2:] == ["content_block_stop", "message_stop"]


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    anthropic=st.booleans(),
)
def test_streams_cut_anywhere_any_number_of_times(
    size: int, cuts: list[int], anthropic: bool
) -> None:
    stream = anthropic_stream(size) if anthropic else openai_stream(size)
    relayed = relay(stream, [cut for cut in cuts if cut <= len(stream)])
    assert (anthropic_text if anthropic else openai_text)(relayed) == RESTORED


def test_only_a_tail_that_may_start_a_placeholder_is_held() -> None:
    restorer = StreamRestorer(RESTORER)
    first = restorer.feed(sse({"choices": [{"index": 0, "delta": {"content": "Mail [EMA"}}]}))
    assert openai_text(first) == "Mail "
    second = restorer.feed(sse({"choices": [{"index": 0, "delta": {"content": "IL_1] now [x"}}]}))
    assert openai_text(second) == "jane@example.com now [x"  # "[x" starts no placeholder


def test_a_tail_held_at_the_end_of_the_stream_is_sent() -> None:
    restorer = StreamRestorer(RESTORER)
    relayed = restorer.feed(sse({"choices": [{"index": 0, "delta": {"content": "ends [EMAIL_"}}]}))
    relayed += restorer.flush()
    assert openai_text(relayed) == "ends [EMAIL_"


def test_tool_call_arguments_and_choices_are_restored_apart() -> None:
    def chunk(index: int, arguments: str) -> bytes:
        call = {"index": 0, "function": {"arguments": arguments}}
        return sse({"choices": [{"index": index, "delta": {"tool_calls": [call]}}]})

    restorer = StreamRestorer(RESTORER)
    relayed = restorer.feed(chunk(0, '{"to": "[EMA') + chunk(1, "[PHO") + chunk(0, 'IL_1]"}'))
    relayed += restorer.feed(chunk(1, "NE_1]")) + restorer.flush()
    texts: dict[int, str] = {}
    for _, payload in events(relayed):
        choice = payload["choices"][0]
        arguments = choice["delta"]["tool_calls"][0]["function"]["arguments"]
        texts[choice["index"]] = texts.get(choice["index"], "") + arguments
    assert texts == {0: '{"to": "jane@example.com"}', 1: "555-234-5678"}


def test_responses_api_deltas_and_whole_texts() -> None:
    delta = {"type": "response.output_text.delta", "item_id": "i", "output_index": 0}
    done = {"type": "response.output_text.done", "item_id": "i", "text": TEXT}
    restorer = StreamRestorer(RESTORER)
    relayed = restorer.feed(
        sse({**delta, "delta": "to [EMA"}, delta["type"])
        + sse({**delta, "delta": "IL_1]"}, delta["type"])
        + sse(done, done["type"])
    )
    parsed = events(relayed + restorer.flush())
    assert "".join(p["delta"] for n, p in parsed if n == delta["type"]) == "to jane@example.com"
    assert parsed[-1][1]["text"] == RESTORED


def test_events_that_are_not_json_pass_through() -> None:
    restorer = StreamRestorer(RESTORER)
    stream = b": keep-alive\n\nevent: ping\ndata: not json\n\n"
    assert restorer.feed(stream) + restorer.flush() == stream
