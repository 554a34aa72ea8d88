"""OpenAI chat completions to and from Anthropic Messages: requests, answers and streams, checked
against the real SDKs' types."""

from __future__ import annotations

from typing import Any

import anthropic.types
import orjson
import pytest
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from proxy.translate.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    UntranslatableField,
    request_to_anthropic,
    wants_usage,
)
from proxy.translate.anthropic_response import error_from_anthropic, response_from_anthropic
from proxy.translate.anthropic_stream import StreamTranslator

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {
        "role": "user",
        "name": "ada",
        "content": [
            {"type": "text", "text": "What is in these pictures, and how is the weather?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
            },
        ],
    },
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "-3°C"}]},
    {"role": "user", "content": "And tomorrow?"},
]
REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": CONVERSATION,
    "tools": [WEATHER_TOOL],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "max_completion_tokens": 300,
    "temperature": 0,
    "top_p": 0.9,
    "stop": "###",
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "user-42",
    "seed": 7,
    "n": 1,
    "logprobs": False,
    "response_format": {"type": "text"},
}


def test_a_rich_request_is_translated_field_by_field() -> None:
    translated = request_to_anthropic(REQUEST, "claude-sonnet-4-5")
    assert translated == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these pictures, and how is the weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "-3°C"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "temperature": 0,
        "top_p": 0.9,
        "stream": True,
        "stop_sequences": ["###"],
        "tools": [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-42"},
    }
    # The Anthropic SDK's own request type takes it.
    TypeAdapter(MessageCreateParamsStreaming).validate_python(translated)
    assert wants_usage(REQUEST)


def test_a_plain_request_gets_the_default_max_tokens() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    translated = request_to_anthropic(body, "claude-haiku-4-5")
    assert translated == {
        "model": "claude-haiku-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    TypeAdapter(MessageCreateParamsNonStreaming).validate_python(translated)
    assert request_to_anthropic({**body, "max_tokens": 10}, "m")["max_tokens"] == 10
    assert not wants_usage(body)


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None,
         {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)  # fmt: skip
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert request_to_anthropic(body, "m").get("tool_choice") == expected


def _with(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [message]}


UNTRANSLATABLE = {
    "n": _with(n=2),
    "logprobs": _with(logprobs=True),
    "top_logprobs": _with(top_logprobs=3),
    "response_format": _with(response_format={"type": "json_object"}),
    "presence_penalty": _with(presence_penalty=0.5),
    "logit_bias": _with(logit_bias={"50256": -100}),
    "functions": _with(functions=[{"name": "f"}]),
    "audio": _with(audio={"voice": "alloy"}),
    "reasoning_effort": _with(reasoning_effort="high"),
    "max_tokens": _with(max_tokens=0),
    "max_completion_tokens": _with(max_completion_tokens="5"),
    "messages": {"model": "gpt-4o", "messages": []},
    "messages[0].role": _message({"role": "function", "name": "f", "content": "x"}),
    "messages[0].content[0].type": _message(
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
    ),
    "messages[0].content[1].image_url.url": _message(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "x"},
                {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
            ],
        }
    ),
    "messages[0].content[0].image_url.url": _message(
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}],
        }
    ),
    "messages[0].audio": _message({"role": "assistant", "content": "x", "audio": {"id": "a"}}),
    "messages[0].tool_calls[0].function.arguments": _message(
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ],
        }
    ),
    "tools[0].type": _with(tools=[{"type": "custom", "custom": {"name": "x"}}]),
    "tool_choice": _with(tool_choice="sometimes"),
}
# A field path that another case names too, under a name of its own.
SYSTEM_IMAGE = _message(
    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}
)
CASES = [(field, field, body) for field, body in UNTRANSLATABLE.items()] + [
    ("system image", "messages[0].content[0].type", SYSTEM_IMAGE)
]


@pytest.mark.parametrize(("field", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_cannot_be_translated_is_named(field: str, body: dict[str, Any]) -> None:
    with pytest.raises(UntranslatableField) as raised:
        request_to_anthropic(body, "m")
    assert raised.value.field == field
    assert field in str(raised.value)


MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "both cities."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 120,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 900,
        "output_tokens": 64,
    },
}


def test_an_answer_is_a_chat_completion() -> None:
    anthropic.types.Message.model_validate(MESSAGE)  # a real Anthropic answer's shape
    completion = response_from_anthropic(MESSAGE)
    parsed = ChatCompletion.model_validate(completion)
    assert parsed.id == MESSAGE["id"]
    assert parsed.model == MESSAGE["model"]
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both cities."
    assert choice.message.tool_calls is not None
    calls = [(c.id, c.function.name, orjson.loads(c.function.arguments))
             for c in choice.message.tool_calls]  # type: ignore[union-attr]  # fmt: skip
    assert calls == [
        ("toolu_01", "get_weather", {"city": "Paris"}),
        ("toolu_02", "get_weather", {"city": "Oslo"}),
    ]
    assert parsed.usage is not None
    assert parsed.usage.prompt_tokens == 120 + 30 + 900
    assert parsed.usage.completion_tokens == 64
    assert parsed.usage.total_tokens == 1050 + 64
    assert parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 900


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("refusal", "content_filter")],
)  # fmt: skip
def test_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    message = {**MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    completion = ChatCompletion.model_validate(response_from_anthropic(message))
    assert completion.choices[0].finish_reason == finish_reason
    assert completion.choices[0].message.tool_calls is None


def test_a_tool_only_answer_has_no_content() -> None:
    message = {**MESSAGE, "content": MESSAGE["content"][3:]}
    completion = ChatCompletion.model_validate(response_from_anthropic(message))
    assert completion.choices[0].message.content is None


def test_errors_take_the_openai_shape() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert error_from_anthropic(body) == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert error_from_anthropic("garbage")["error"]["type"] == "api_error"


def event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


START = event(
    {"type": "message_start", "message": {
        "id": "msg_stream", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 5,
                  "cache_read_input_tokens": 100, "output_tokens": 1}}}
)  # fmt: skip
PING = event({"type": "ping"})
STREAM = b"".join(
    [
        START,
        PING,
        event({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        event({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "Hello, "}}),
        event({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "wörld ✓"}}),
        event({"type": "content_block_stop", "index": 0}),
        event({"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
        event({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": ""}}),
        event({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
        event({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        event({"type": "content_block_stop", "index": 1}),
        event({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
               "usage": {"output_tokens": 42}}),
        event({"type": "message_stop"}),
    ]
)  # fmt: skip


def translated(stream: bytes, pieces: list[bytes], include_usage: bool) -> list[Any]:
    translator = StreamTranslator(include_usage=include_usage)
    out = b"".join(translator.feed(piece) for piece in pieces)
    assert b"".join(pieces) == stream
    events = [block.removeprefix(b"data: ") for block in out.split(b"\n\n") if block]
    return [e if e == b"[DONE]" else {**orjson.loads(e), "created": 0} for e in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_translates_alike_however_it_is_split(include_usage: bool) -> None:
    whole = translated(STREAM, [STREAM], include_usage)
    for cut in range(1, len(STREAM)):
        split = [STREAM[:cut], STREAM[cut:]]
        assert translated(STREAM, split, include_usage) == whole, cut
    bytewise = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert translated(STREAM, bytewise, include_usage) == whole
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert translated(crlf, [crlf[i : i + 1] for i in range(len(crlf))], include_usage) == whole


def test_a_stream_is_valid_chunks_ending_in_done() -> None:
    events = translated(STREAM, [STREAM], include_usage=True)
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.id == "msg_stream" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, wörld ✓"
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].index == 0 and calls[0].id == "toolu_9"
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls if call.function)
    assert orjson.loads(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes.count("tool_calls") == 1 and finishes[-1] == "tool_calls"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 25 + 5 + 100
    assert usage_chunk.usage.completion_tokens == 42
    assert usage_chunk.usage.prompt_tokens_details is not None
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == 100
    without = translated(STREAM, [STREAM], include_usage=False)
    assert all(e == b"[DONE]" or e["choices"] for e in without)


def test_content_starts_with_the_first_delta_not_the_preamble() -> None:
    translator = StreamTranslator(include_usage=False)
    preamble = translator.feed(START + PING)
    assert not translator.content_started
    assert ChatCompletionChunk.model_validate_json(preamble.removeprefix(b"data: ").strip())
    translator.feed(event({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}))  # fmt: skip
    assert not translator.content_started
    translator.feed(event({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": "Hi"}}))  # fmt: skip
    assert translator.content_started
    assert not translator.finished
    translator.feed(event({"type": "message_stop"}))
    assert translator.finished


def test_the_cumulative_usage_keeps_what_message_delta_lacks() -> None:
    translator = StreamTranslator(include_usage=False)
    translator.feed(STREAM)
    assert translator.usage == {
        "input_tokens": 25,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 42,
    }


def test_an_error_event_ends_the_stream_without_done() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    translator = StreamTranslator(include_usage=True)
    out = translator.feed(START + PING + event(overloaded))
    assert not translator.content_started  # the caller may still fail over
    assert translator.error == error_from_anthropic(overloaded)
    assert not translator.finished
    last = out.split(b"\n\n")[-2]
    assert orjson.loads(last.removeprefix(b"data: ")) == translator.error
    assert b"[DONE]" not in out
