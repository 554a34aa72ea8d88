"""OpenAI chat completions to Anthropic Messages: the request, for route steps on anthropic.

- `request_to_anthropic(body, model)`: a chat-completions body as a Messages body; a field it
  cannot carry over raises UntranslatableField naming it (the caller answers 400).

Translated: system and developer messages (to `system`), text and image parts (data URLs to a
base64 source, http(s) URLs to a url source), tools, tool_choice, parallel_tool_calls, assistant
tool_calls (to tool_use blocks), tool messages (to tool_result blocks in a user turn),
max_completion_tokens or max_tokens (DEFAULT_MAX_TOKENS when neither: Anthropic requires one),
temperature, top_p, stop (to stop_sequences), stream, user (to metadata.user_id). Dropped, as
they do not change the answer: a message's `name`, a function's `strict`, an image's `detail`,
`seed` (Anthropic has none), `metadata`, `store: false`, `service_tier`. Taken only at the value
that means "nothing asked" (else untranslatable): n 1, logprobs false, presence_penalty and
frequency_penalty 0, an empty logit_bias, response_format text, modalities ["text"].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

ANTHROPIC_VERSION = "2023-06-01"  # the anthropic-version header of translated requests
DEFAULT_MAX_TOKENS = 4096  # when the client names no limit; Anthropic requires one


class UntranslatableField(ValueError):
    """A request field an anthropic step cannot carry; `field` names it as the client sent it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} cannot be translated for an anthropic step: {reason}")
        self.field = field


def _dropped(_: Any) -> bool:
    return True


def _equals(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: (
        value is None or any(value == each and type(value) is type(each) for each in allowed)
    )


# Fields taken as they are only when they ask for nothing an anthropic step would miss.
NO_OP_FIELDS: dict[str, Callable[[Any], bool]] = {
    "n": _equals(1),
    "logprobs": _equals(False),
    "top_logprobs": _equals(0),
    "presence_penalty": _equals(0, 0.0),
    "frequency_penalty": _equals(0, 0.0),
    "logit_bias": _equals({}),
    "response_format": _equals({"type": "text"}),
    "modalities": _equals(["text"]),
    "store": _equals(False),
    "seed": _dropped,
    "metadata": _dropped,
    "service_tier": _dropped,
    "stream_options": _dropped,  # include_usage: the StreamTranslator's, see wants_usage
}
TRANSLATED_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "stop", "stream", "tools", "tool_choice", "parallel_tool_calls", "user",
    }
)  # fmt: skip


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streamed request asked for the usage chunk (stream_options.include_usage)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def request_to_anthropic(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Messages body for `body`, on `model`."""
    for name, value in body.items():
        if name in TRANSLATED_FIELDS:
            continue
        accepts = NO_OP_FIELDS.get(name)
        if accepts is None:
            raise UntranslatableField(name, "Anthropic has no such field")
        if not accepts(value):
            raise UntranslatableField(name, f"only its default is supported, not {value!r}")
    system, turns = _conversation(body.get("messages"))
    request: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body), "messages": turns}
    if system:
        request["system"] = system
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else _strings(stop, "stop")
    if body.get("tools"):
        request["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(body["tools"])]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and request.get("tools"):  # Anthropic takes a choice only with tools
        request["tool_choice"] = choice
    if body.get("user") is not None:
        request["metadata"] = {"user_id": _string(body["user"], "user")}
    return request


def _max_tokens(body: Mapping[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if type(value) is not int or value < 1:
                raise UntranslatableField(name, "must be a positive integer")
            return value
    return DEFAULT_MAX_TOKENS


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UntranslatableField(where, "must be a string")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise UntranslatableField(where, "must be a string or a list of strings")
    return [_string(each, f"{where}[{i}]") for i, each in enumerate(value)]


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UntranslatableField(where, "must be an object")
    return value


MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}


def _conversation(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks, and the turns, consecutive messages of one role merged into one turn
    (tool results and the user's next words are one user turn to Anthropic)."""
    if not isinstance(messages, list) or not messages:
        raise UntranslatableField("messages", "must be a non-empty list")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = _object(message, where)
        role = message.get("role")
        known = MESSAGE_FIELDS.get(role) if isinstance(role, str) else None
        if known is None:
            raise UntranslatableField(f"{where}.role", f"{role!r} has no Anthropic counterpart")
        for name, value in message.items():
            if name not in known and value is not None:
                raise UntranslatableField(f"{where}.{name}", "Anthropic has no such field")
        if role in ("system", "developer"):
            system += _text_blocks(message.get("content"), f"{where}.content")
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"{where}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        else:
            blocks = [_tool_result(message, where)]
        anthropic_role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"] += blocks
        elif blocks:
            turns.append({"role": anthropic_role, "content": blocks})
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise UntranslatableField(where, "must be a string or a list of text parts")
    blocks = []
    for j, part in enumerate(content):
        part = _object(part, f"{where}[{j}]")
        if part.get("type") != "text":
            raise UntranslatableField(f"{where}[{j}].type", "only text parts are supported here")
        text = _string(part.get("text"), f"{where}[{j}].text")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        part = _object(part, at)
        kind = part.get("type")
        if kind == "image_url":
            image = _object(part.get("image_url"), f"{at}.image_url")
            blocks.append(_image(image.get("url"), f"{at}.image_url.url"))
        elif kind == "text":
            text = _string(part.get("text"), f"{at}.text")
            if text:
                blocks.append({"type": "text", "text": text})
        else:
            raise UntranslatableField(f"{at}.type", f"{kind!r} parts are not supported")
    return blocks


def _image(url: Any, where: str) -> dict[str, Any]:
    url = _string(url, where)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type.startswith("image/"):
            raise UntranslatableField(where, "a data URL must hold a base64 image")
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UntranslatableField(where, "must be an http(s) or a data URL")


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks = [] if content is None else _text_blocks(content, f"{where}.content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UntranslatableField(f"{where}.tool_calls", "must be a list")
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        call = _object(call, at)
        if call.get("type", "function") != "function":
            raise UntranslatableField(f"{at}.type", "only function calls are supported")
        function = _object(call.get("function"), f"{at}.function")
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = orjson.loads(_string(arguments, f"{at}.function.arguments"))
        except orjson.JSONDecodeError:
            raise UntranslatableField(f"{at}.function.arguments", "must be JSON") from None
        blocks.append(
            {
                "type": "tool_use",
                "id": _string(call.get("id"), f"{at}.id"),
                "name": _string(function.get("name"), f"{at}.function.name"),
                "input": _object(tool_input, f"{at}.function.arguments"),
            }
        )
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": _string(message.get("tool_call_id"), f"{where}.tool_call_id"),
    }
    if isinstance(content, str):
        result["content"] = content
    else:
        result["content"] = _text_blocks(content, f"{where}.content")
    return result


def _tool(tool: Any, where: str) -> dict[str, Any]:
    tool = _object(tool, where)
    if tool.get("type") != "function":
        raise UntranslatableField(f"{where}.type", "only function tools are supported")
    function = _object(tool.get("function"), f"{where}.function")
    translated: dict[str, Any] = {
        "name": _string(function.get("name"), f"{where}.function.name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description") is not None:
        translated["description"] = _string(
            function["description"], f"{where}.function.description"
        )
    return translated


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    translated: dict[str, Any] | None
    if choice is None:
        translated = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none"):
        translated = {"type": choice}
    elif choice == "required":
        translated = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = _object(choice.get("function"), "tool_choice.function")
        translated = {"type": "tool", "name": _string(function.get("name"), "tool_choice")}
    else:
        raise UntranslatableField("tool_choice", f"{choice!r} is not supported")
    if parallel is False and translated is not None and translated["type"] != "none":
        translated["disable_parallel_tool_use"] = True
    return translated
