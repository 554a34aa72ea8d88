"""The wire format of a route step: OpenAI's as it is, or another provider's through its
translator (proxy/translate/). Routes take OpenAI chat-completions and embeddings bodies and
answer in OpenAI's shapes, whatever the step's provider speaks.

A format turns the route's body into the step's payload and path, the step's answers and errors
back into OpenAI's, and watches an event stream for its first content-bearing event (before it,
a failure can still fail over) while relaying it.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from proxy.calls import CHAT
from proxy.errors import ProxyError, invalid_request
from proxy.providers.base import Meter
from proxy.translate.anthropic_request import (
    ANTHROPIC_VERSION,
    UntranslatableField,
    request_to_anthropic,
)
from proxy.translate.anthropic_response import error_from_anthropic, response_from_anthropic
from proxy.translate.anthropic_stream import StreamTranslator
from proxy.translate.sse import EventReader, EventTooLarge

# Delta fields that carry an answer; a role-only delta does not.
CONTENT_FIELDS = ("content", "tool_calls", "function_call", "refusal", "audio")


class StreamWatch(Protocol):
    @property
    def content_started(self) -> bool:
        """The first content-bearing event went through."""

    @property
    def complete(self) -> bool:
        """The stream ended as a whole answer does."""

    @property
    def usage_chunk(self) -> bytes:
        """A translated stream's usage chunk, when the client is not sent it."""

    @property
    def error(self) -> dict[str, Any] | None:
        """An in-band error event, once one came."""

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        """(what the client is sent, the stream as a whole answer holds it: for the cache)."""

    def flush(self) -> bytes: ...


class OpenAIWatch:
    """An OpenAI stream, relayed through its meter; read only until its content starts."""

    usage_chunk = b""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._reader = EventReader()
        self.content_started = False
        self.complete = False
        self.error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        if not self.content_started:
            try:
                events = self._reader.feed(chunk)
            except EventTooLarge:  # not a stream to hold back
                self.content_started = True
                events = []
            for event in events:
                self._look(event.data)
        return self._meter.feed(chunk), chunk

    def _look(self, data: str) -> None:
        if self.content_started or self.error is not None:
            return
        if data == "[DONE]":
            self.complete = True
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        if "error" in payload:
            self.error = payload
            return
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if choice.get("finish_reason") is not None or (
                isinstance(delta, dict) and any(map(delta.get, CONTENT_FIELDS))
            ):
                self.content_started = True

    def flush(self) -> bytes:
        return self._meter.flush()


class AnthropicWatch:
    """A Messages stream, metered as it is, then translated into chat.completion.chunk events."""

    def __init__(self, meter: Meter, include_usage: bool) -> None:
        self._meter = meter
        self._translator = StreamTranslator(include_usage=include_usage)
        self._include_usage = include_usage

    @property
    def content_started(self) -> bool:
        return self._translator.content_started

    @property
    def complete(self) -> bool:
        return self._translator.finished

    @property
    def error(self) -> dict[str, Any] | None:
        return self._translator.error

    @property
    def usage_chunk(self) -> bytes:
        return b"" if self._include_usage else self._translator.usage_chunk

    def feed(self, chunk: bytes) -> tuple[bytes, bytes]:
        out = self._translator.feed(self._meter.feed(chunk))
        return out, out

    def flush(self) -> bytes:
        return self._translator.feed(self._meter.flush())


class OpenAIFormat:
    headers: dict[str, str] = {}

    def tail(self, endpoint: str) -> str:
        return endpoint

    def payload(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return body

    def answer(self, body: bytes) -> bytes:
        return body

    def error(self, body: bytes) -> bytes:
        return body

    def watch(self, meter: Meter, include_usage: bool) -> StreamWatch:
        return OpenAIWatch(meter)


def untranslatable(error: UntranslatableField) -> ProxyError:
    return invalid_request(str(error), "untranslatable_field")


class AnthropicFormat:
    headers = {"anthropic-version": ANTHROPIC_VERSION}

    def tail(self, endpoint: str) -> str:
        if endpoint != CHAT:
            raise invalid_request(
                f"an anthropic step answers chat completions only, not {endpoint}",
                "unsupported_endpoint",
            )
        return "messages"

    def payload(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        try:
            return request_to_anthropic(body, model)
        except UntranslatableField as error:
            raise untranslatable(error) from None

    def answer(self, body: bytes) -> bytes:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        return orjson.dumps(response_from_anthropic(message)) if isinstance(message, dict) else body

    def error(self, body: bytes) -> bytes:
        try:
            return orjson.dumps(error_from_anthropic(orjson.loads(body)))
        except orjson.JSONDecodeError:
            return orjson.dumps(error_from_anthropic(None))

    def watch(self, meter: Meter, include_usage: bool) -> StreamWatch:
        return AnthropicWatch(meter, include_usage)


Format = OpenAIFormat | AnthropicFormat
OPENAI_FORMAT = OpenAIFormat()
# By an adapter's wire_format: those other than OpenAI's, which every other provider speaks.
FORMATS: dict[str, Format] = {"anthropic": AnthropicFormat()}
