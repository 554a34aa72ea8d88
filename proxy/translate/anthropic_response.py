"""Anthropic Messages answers and errors as OpenAI chat completions, for route steps on anthropic.

- `response_from_anthropic(message)`: a Messages answer as a chat.completion.
- `error_from_anthropic(error)`: an Anthropic error object in the OpenAI error shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic usage counted the OpenAI way: every prompt token, cached ones included."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + cache_read
    )
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _tool_call(block: Mapping[str, Any], index: int, arguments: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def response_from_anthropic(message: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages answer as a chat.completion; thinking blocks are left out."""
    blocks = message.get("content") or []
    text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
    calls = [
        _tool_call(block, i, orjson.dumps(block.get("input", {})).decode())
        for i, block in enumerate(b for b in blocks if b.get("type") == "tool_use")
    ]
    for call in calls:
        del call["index"]  # a streamed call's field only
    reply: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(message.get("usage") or {}),
    }


def error_from_anthropic(error: Any) -> dict[str, Any]:
    """An Anthropic error body (or its `error` object) in the OpenAI error shape."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        error = {}
    message = error.get("message")
    return {
        "error": {
            "message": message if isinstance(message, str) else "upstream error",
            "type": error.get("type") if isinstance(error.get("type"), str) else "api_error",
            "param": None,
            "code": None,
        }
    }
