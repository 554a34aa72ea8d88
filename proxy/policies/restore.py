"""Placeholders in the answer put back: in a JSON body, and in an event stream as it passes.

A JSON answer holds placeholders inside its strings, where they need no escaping: each is
replaced by its value, JSON-escaped. A stream is relayed event by event, each event as soon as
it is complete (a client reads no event before its end). Its text arrives in pieces, one per
event (OpenAI chat `delta.content` and tool-call `arguments`, completions `text`, Anthropic
`text_delta` and `input_json_delta`, responses-API `*.delta`), so a placeholder may be split
across events: when a piece ends with what may be the start of a placeholder, only that tail is
held back and put before the next piece of the same text; should no next piece come, it is sent
in an event of its own, shaped like the last, before the next event that carries no piece.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.policies.outcome import Screening
from proxy.policies.redact import PLACEHOLDER_MAX

if TYPE_CHECKING:
    from proxy.calls import Call

PLACEHOLDER = re.compile(r"\[[A-Z_]+_[0-9]+\]")
PLACEHOLDER_BYTES = re.compile(rb"\[[A-Z_]+_[0-9]+\]")
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
MAX_EVENT_BYTES = 4 * 1024**2  # an event longer than this is relayed as it comes

Key = tuple[Any, ...]  # which text a piece belongs to: its field and the indexes naming it


class Restorer:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._escaped = {
            placeholder.encode(): orjson.dumps(value)[1:-1] for placeholder, value in values.items()
        }
        self._prefixes = frozenset(p[:n] for p in values for n in range(1, len(p)))

    def text(self, text: str) -> str:
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._values.get(m.group(), m.group()), text)

    def json(self, body: bytes) -> bytes:
        """A JSON document with the placeholders in its strings put back."""
        if b"[" not in body:
            return body
        return PLACEHOLDER_BYTES.sub(lambda m: self._escaped.get(m.group(), m.group()), body)

    def held_from(self, text: str) -> int:
        """Where the tail that may be the start of a placeholder begins (len(text) if none)."""
        for position in range(max(0, len(text) - PLACEHOLDER_MAX), len(text)):
            if text[position] == "[" and text[position:] in self._prefixes:
                return position
        return len(text)


class StreamRestorer:
    """An event stream with the placeholders put back; feed it chunks, flush it at the end."""

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer
        self._buffer = b""
        self._held: dict[Key, tuple[str, bytes, bytes]] = {}  # text, and its last event's shape

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = []
        start = 0
        for end in EVENT_END.finditer(self._buffer):
            out.append(self._event(self._buffer[start : end.start()], end.group()))
            start = end.end()
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:  # no event at all: pass it on as it is
            out.append(self._restorer.json(self._buffer))
            self._buffer = b""
        return b"".join(out)

    def flush(self) -> bytes:
        tail = self._release() + self._restorer.json(self._buffer)
        self._buffer = b""
        return tail

    def _event(self, event: bytes, end: bytes) -> bytes:
        lines = event.splitlines()
        data_lines = [line for line in lines if line.startswith(b"data:")]
        if len(data_lines) != 1:
            return self._release() + self._restorer.json(event) + end
        other = b"\n".join(line for line in lines if not line.startswith(b"data:"))
        data = data_lines[0][5:].lstrip(b" ")
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:  # [DONE], say
            return self._release() + event + end
        if not isinstance(payload, dict):
            return self._release() + self._restorer.json(event) + end
        pieces = list(_pieces(payload))
        if not pieces:
            return self._release() + _event_bytes(other, self._restorer.json(data), end)
        for key, container, field in pieces:
            text = self._held.pop(key, ("", b"", b""))[0] + container[field]
            cut = self._restorer.held_from(text)
            container[field] = self._restorer.text(text[:cut])
            if cut < len(text):
                self._held[key] = (text[cut:], other, data)
        # The pieces restored, the rest of the event (ids, whole texts) by its strings.
        restored = self._restorer.json(orjson.dumps(payload))
        return _event_bytes(other, restored, end)

    def _release(self) -> bytes:
        """What is held back, each in an event shaped like the last one of its text."""
        out = []
        for key, (text, other, data) in self._held.items():
            payload = orjson.loads(data)
            for piece_key, container, field in _pieces(payload):
                container[field] = self._restorer.text(text) if piece_key == key else ""
            out.append(_event_bytes(other, orjson.dumps(payload), b"\n\n"))
        self._held.clear()
        return b"".join(out)


def _event_bytes(other: bytes, data: bytes, end: bytes) -> bytes:
    return (other + b"\n" if other else b"") + b"data: " + data + end


def _pieces(event: dict[str, Any]) -> Iterator[tuple[Key, dict[str, Any], str]]:
    """The pieces of streamed text an event carries: (which text, its container, its field)."""
    for choice in _list(event.get("choices")):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("content"), str):
                yield ("content", index), delta, "content"
            for call in _list(delta.get("tool_calls")):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    yield ("arguments", index, call.get("index", 0)), function, "arguments"
        if isinstance(choice.get("text"), str):
            yield ("text", index), choice, "text"
    delta = event.get("delta")
    if isinstance(delta, dict):  # Anthropic content_block_delta
        for field in ("text", "partial_json"):
            if isinstance(delta.get(field), str):
                yield (field, event.get("index", 0)), delta, field
    elif isinstance(delta, str):  # responses API: response.output_text.delta and the like
        where = (event.get("item_id"), event.get("output_index"), event.get("content_index"))
        yield ("delta", event.get("type"), *where), event, "delta"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _RestoredContent:
    def __init__(self, content: Any, restorer: Restorer) -> None:
        self._content = content
        self._restorer = restorer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._content, name)

    async def iter_any(self) -> AsyncIterator[bytes]:
        stream = StreamRestorer(self._restorer)
        async for chunk in self._content.iter_any():
            restored = stream.feed(chunk)
            if restored:
                yield restored
        tail = stream.flush()
        if tail:
            yield tail


class ScreenedAnswer:
    """Upstream's answer as the client gets it: warnings in a header, placeholders put back."""

    def __init__(self, upstream: aiohttp.ClientResponse, screening: Screening) -> None:
        self._upstream = upstream
        headers = CIMultiDict(upstream.headers)
        if screening.warned:
            counts = screening.counts
            headers["x-policy-warnings"] = ", ".join(f"{e}={counts[e]}" for e in screening.warned)
        self.headers = CIMultiDictProxy(headers)
        self._restorer = Restorer(screening.restore) if screening.restore else None
        streamed = upstream.content_type == "text/event-stream"
        self.content = (
            _RestoredContent(upstream.content, self._restorer)
            if self._restorer is not None and streamed
            else upstream.content
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    async def read(self) -> bytes:
        body = await self._upstream.read()
        if self._restorer is not None and self._upstream.content_type == "application/json":
            return self._restorer.json(body)
        return body


def screened_answer(call: Call, upstream: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """The answer to relay: upstream's own when the call's policy has nothing to add to it."""
    screening = call.screening
    if screening is None or not (screening.warned or screening.restore):
        return upstream
    return cast(aiohttp.ClientResponse, ScreenedAnswer(upstream, screening))
