"""Usage of Anthropic Messages answers, JSON or SSE, in the terms pricing bills by.

Anthropic's `input_tokens` leaves out the prompt tokens read from and written to the cache;
`Usage.prompt_tokens` is the whole prompt (as OpenAI counts it), with `cached_tokens` (cache
reads) and `cache_creation_tokens` (cache writes) as parts of it, each at its own price.

A stream's usage is `message_delta`'s, cumulative, with `message_start`'s for any field it
lacks. A stream cut before `message_delta` is billed by `usage_when_cut`: `message_start`'s
input usage and the output counted from the deltas streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.jsonscan import members
from proxy.metering import USAGE_KEY, StreamMeter, Usage, event_json
from shared.jsonutil import positive_int


def message_usage(usage: Any) -> Usage | None:
    """Usage from an Anthropic `usage` object."""
    return _usage(usage) if isinstance(usage, dict) else None


def _usage(usage: dict[str, Any]) -> Usage:
    written = positive_int(usage.get("cache_creation_input_tokens"))
    read = positive_int(usage.get("cache_read_input_tokens"))
    return Usage(
        prompt_tokens=positive_int(usage.get("input_tokens")) + written + read,
        completion_tokens=positive_int(usage.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=written,
    )


def usage_of_message(body: bytes) -> tuple[Usage | None, str]:
    """Usage and model of a non-streamed Messages answer."""
    answer = members(body, ("model", "usage"))
    model = answer.get("model")
    return message_usage(answer.get("usage")), model if isinstance(model, str) else ""


@dataclass(slots=True)
class MessageStreamMeter(StreamMeter):
    """StreamMeter for Anthropic's event stream: relays every byte, drops nothing.

    `usage` stays None until `message_delta`; a stream cut before it is billed with
    `usage_when_cut`.
    """

    drop_usage_chunk: bool = field(default=False, init=False)
    _started: dict[str, Any] = field(default_factory=dict)  # message_start's usage

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        if rest.strip() and not self._oversized:
            self._inspect(rest)
        return rest  # relayed byte for byte, a trailing blank or partial line included

    def usage_when_cut(self, prompt_tokens: Callable[[], int]) -> Usage:
        """message_start's input usage (or, without one, `prompt_tokens()`) and the output
        counted from the deltas streamed. Counts with tiktoken: off the event loop."""
        streamed = self.completion_tokens()
        if not self._started:
            return Usage(prompt_tokens(), streamed)
        started = _usage(self._started)
        started.completion_tokens = max(started.completion_tokens, streamed)
        return started

    def _inspect(self, event: bytes) -> bool:
        payload = event_json(event) if event.find(USAGE_KEY) >= 0 else None
        kind = payload.get("type") if payload is not None else None
        if payload is not None and kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("usage"), dict):
                    self._started = message["usage"]
                if isinstance(message.get("model"), str):
                    self.model = message["model"]
        elif payload is not None and kind == "message_delta":
            delta_usage = payload.get("usage")
            if isinstance(delta_usage, dict):
                given = {name: value for name, value in delta_usage.items() if value is not None}
                self.usage = _usage({**self._started, **given})
                self._forget_text()
                return True
        if self.usage is None:
            self._keep(event)
        return True
