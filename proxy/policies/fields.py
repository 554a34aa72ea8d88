"""The texts a request carries to a model, found by the shape of its fields, whatever the provider.

OpenAI chat messages (string content, content parts, tool calls' arguments, tool messages),
Anthropic messages (`system` as a string or blocks, text blocks, `tool_use` input, `tool_result`
content, plain-text documents), completions `prompt`, embeddings and responses-API `input` and
`instructions`, Gemini `contents[].parts[].text`. Images, audio, files, base64 data, thinking
blocks and tool definitions are not texts to scan, and are left as they are.
"""

from __future__ import annotations

from typing import Any

# Where one text lives: its container and the key (or index) it has there, so that a redacted
# text can be written back in place.
Slot = tuple[Any, Any]

TOP_LEVEL = ("messages", "system", "prompt", "input", "instructions", "contents")
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def text_slots(document: dict[str, Any]) -> list[Slot]:
    slots: list[Slot] = []
    for name in TOP_LEVEL:
        if name in document:
            _value(document, name, slots)
    return slots


def _value(container: Any, key: Any, slots: list[Slot]) -> None:
    value = container[key]
    if isinstance(value, str):
        slots.append((container, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                slots.append((value, index))
            elif isinstance(item, dict):
                _part(item, slots)
            elif isinstance(item, list):  # a batch of prompts; a token array is left alone
                _value(value, index, slots)
    elif isinstance(value, dict):
        _part(value, slots)


def _part(part: dict[str, Any], slots: list[Slot]) -> None:
    """A message, a content part or block, or a responses-API item."""
    kind = part.get("type")
    if kind in TEXT_PARTS or (kind is None and isinstance(part.get("text"), str)):
        if isinstance(part.get("text"), str):
            slots.append((part, "text"))
    elif kind == "tool_use":
        if "input" in part:
            _every_string(part, "input", slots)
    elif kind == "function_call":  # responses API
        _string(part, "arguments", slots)
    elif kind == "function_call_output":
        if "output" in part:
            _value(part, "output", slots)
    elif kind == "document":
        source = part.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            _string(source, "data", slots)
    if kind in (None, "message", "tool_result"):
        for name in ("content", "parts"):
            if name in part:
                _value(part, name, slots)
        for call in part.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                _string(call["function"], "arguments", slots)
        if isinstance(part.get("function_call"), dict):
            _string(part["function_call"], "arguments", slots)


def _string(container: dict[str, Any], key: str, slots: list[Slot]) -> None:
    if isinstance(container.get(key), str):
        slots.append((container, key))


def _every_string(container: Any, key: Any, slots: list[Slot]) -> None:
    """Every string value inside a JSON value (its object keys aside)."""
    value = container[key]
    if isinstance(value, str):
        slots.append((container, key))
    elif isinstance(value, dict):
        for name in value:
            _every_string(value, name, slots)
    elif isinstance(value, list):
        for index in range(len(value)):
            _every_string(value, index, slots)
