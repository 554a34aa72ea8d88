"""An Anthropic Messages event stream as OpenAI chat.completion.chunk events.

- `StreamTranslator`: a Messages event stream, fed as it arrives, as chat.completion.chunk events;
  it says when the first content-bearing event went out, so that a caller can fail over before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.translate.anthropic_response import (
    FINISH_REASONS,
    _tool_call,
    error_from_anthropic,
    openai_usage,
)
from proxy.translate.sse import EventReader


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class StreamTranslator:
    """A Messages event stream as chat.completion.chunk events, fed in pieces split anywhere.

    `content_started` turns true with the first content-bearing event sent on (a text or tool
    call delta, or the finish chunk; message_start, ping, empty blocks and thinking are not).
    An Anthropic `error` event becomes `data: {"error": {...}}` with no [DONE] after it, and is
    kept in `error`; `finished` is true once message_stop has been sent on as [DONE]. `usage` is
    Anthropic's cumulative usage: message_delta's, with message_start's for any field it lacks;
    `usage_chunk` its OpenAI usage chunk once message_stop came, whether sent on or not.
    """

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.content_started = False
        self.finished = False
        self.error: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.usage_chunk = b""  # the usage chunk at message_stop, sent on or not
        self._reader = EventReader()
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index

    def feed(self, chunk: bytes) -> bytes:
        """The OpenAI events for the Anthropic events that `chunk` completes."""
        out = []
        for event in self._reader.feed(chunk):
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                out += self._translate(payload)
        return b"".join(out)

    def _chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        return _sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                             "logprobs": None}],
            }
        )  # fmt: skip

    def _content(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> list[bytes]:
        self.content_started = True
        return [self._chunk(delta, finish_reason)]

    def _translate(self, event: Mapping[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return self._content({"content": delta["text"]})
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tool_index.get(event.get("index", -1))
                if index is not None:
                    function = {"arguments": delta["partial_json"]}
                    return self._content({"tool_calls": [{"index": index, "function": function}]})
            return []
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", -1)] = len(self._tool_index)
                return self._content({"tool_calls": [_tool_call(block, index, "")]})
            if block.get("type") == "text" and block.get("text"):
                return self._content({"content": block["text"]})
            return []
        if kind == "message_start":
            message = event.get("message") or {}
            self._id, self._model = message.get("id") or "", message.get("model") or ""
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self.usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._content({}, FINISH_REASONS.get(reason or "", "stop"))
        if kind == "message_stop":
            self.finished = True
            self.usage_chunk = self._usage_chunk()
            return [self.usage_chunk, DONE] if self.include_usage else [DONE]
        if kind == "error":
            self.error = error_from_anthropic(event.get("error"))
            return [_sse(self.error)]
        return []  # ping, content_block_stop, and kinds added later

    def _usage_chunk(self) -> bytes:
        return _sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": openai_usage(self.usage),
            }
        )
