"""Token accounting: the counting rule of the package docstring."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from proxy.fakeupstream.state import (
    JSON,
    REPLY_WORDS,
    FakeOptions,
)

# --- token accounting ------------------------------------------------------------------------


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _content_words(content: object) -> int:
    """Words of a message content: a string or a list of parts with a `text`."""
    if isinstance(content, list):
        return sum(_words(part.get("text")) for part in content if isinstance(part, dict))
    return _words(content)


def input_tokens(value: object) -> int:
    """Legacy prompt / embedding input: a string, token array, or a list of either."""
    if isinstance(value, str):
        return _words(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        return sum(input_tokens(item) for item in value)
    return 0


def chat_prompt_tokens(messages: list[JSON]) -> int:
    return sum(_content_words(message.get("content")) + 3 for message in messages)


def responses_input_tokens(body: JSON) -> int:
    items = body.get("input")
    items = [{"content": items}] if isinstance(items, str) else items or []
    tokens = _words(body.get("instructions")) + 3 if body.get("instructions") else 0
    for item in items:
        if isinstance(item, dict):
            tokens += _content_words(item.get("content", item.get("output"))) + 3
    return tokens


@lru_cache(maxsize=256)
def _reply(count: int) -> tuple[str, ...]:
    return tuple(("" if i == 0 else " ") + REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(count))


ECHO_PIECE = 3  # characters an echoed event carries: placeholders get split across events


def echoed(text: str) -> tuple[str, ...]:
    """The text back, a few characters a piece (FakeOptions.echo)."""
    return tuple(text[i : i + ECHO_PIECE] for i in range(0, len(text), ECHO_PIECE))


def reply_pieces(options: FakeOptions, cap: object) -> tuple[tuple[str, ...], bool]:
    """The reply pieces (one token each) and whether the cap cut it short."""
    count = max(options.stream_chunks, 0)
    if isinstance(cap, int) and cap < count:
        return _reply(max(cap, 0)), True
    return _reply(count), False


def cached_tokens(body: JSON, prompt_tokens: int) -> int:
    return prompt_tokens // 2 if body.get("user") == "cached" else 0


def chat_usage(prompt: int, completion: int, cached: int) -> JSON:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- Anthropic -------------------------------------------------------------------------------


def _anthropic_units(body: JSON) -> Iterator[tuple[int, bool]]:
    """The prompt in cache-prefix order (tools, system, messages): each part's tokens, and
    whether it carries a cache_control breakpoint."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            yield 3 + _words(tool.get("description")), "cache_control" in tool
    system = body.get("system")
    if isinstance(system, list):
        for block in system:
            if isinstance(block, dict):
                yield _words(block.get("text")), "cache_control" in block
    else:
        yield _words(system), False
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        yield 3, False
        if not isinstance(content, list):
            yield _words(content), False
            continue
        for block in content:
            if isinstance(block, dict):
                inner = block.get("content")  # a tool_result's
                yield _words(block.get("text")) + _content_words(inner), "cache_control" in block


def anthropic_usage(body: JSON, output_tokens: int) -> JSON:
    """Usage by the package docstring's rule: the prompt up to the last cache_control
    breakpoint is cached: read up to the breakpoint before it, written from there on."""
    total, breakpoints = 0, [0, 0]
    for tokens, marked in _anthropic_units(body):
        total += tokens
        if marked:
            breakpoints.append(total)
    read, last = breakpoints[-2], breakpoints[-1]
    return {
        "input_tokens": total - last,
        "cache_creation_input_tokens": last - read,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": last - read,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
