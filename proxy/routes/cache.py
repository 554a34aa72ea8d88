"""The response cache of routes with `cacheConfig.enabled`, in Redis under the project's prefix.

- `cache_key(route, body)`: None unless the request is deterministic (`temperature` 0 or a
  `seed`); else a digest of the route (its id and version: a changed route starts afresh) and of
  every body field but stream, stream_options, user and metadata, as canonical JSON.
- `CachedAnswer`: only a complete 2xx answer becomes one, from a JSON body (`from_json`) or from
  a stream that reached [DONE] with every choice finished (`StreamCollector.answer`). It is kept
  as the chat.completion (or embeddings) JSON, with the step that served it and what it cost,
  and served as that, or replayed as SSE
  (`as_sse`) for a streamed request: chat.completion.chunk events, the usage chunk only if asked
  for, then [DONE].
- `ResponseCache`: lookup and store, each one Redis round trip on the proxy's pipelined
  connection, made only for routes with the cache enabled: the hot path's budget (admit and
  settle) stays as it is for every other call. A Redis error is a miss, never a failed call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.routes.model import Route
from proxy.translate.sse import EventReader
from shared.limit_keys import PREFIX
from shared.metrics import Counter
from shared.redispipe import Pipe, RedisReplyError, RedisUnavailable

CACHE_PREFIX = f"{PREFIX}route-cache:"
UNKEYED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})
MAX_ANSWER_BYTES = 1024 * 1024  # a longer answer is served, not cached


def cacheable(body: Mapping[str, Any]) -> bool:
    """`temperature` 0 or an integer `seed` (by type: true is no seed, false no temperature)."""
    temperature = body.get("temperature")
    zero_temperature = type(temperature) in (int, float) and temperature == 0
    return zero_temperature or type(body.get("seed")) is int


def cache_key(route: Route, body: Mapping[str, Any]) -> str | None:
    """The Redis key of this request's answer on this route; None when it is not cacheable."""
    if not cacheable(body):
        return None
    keyed = {name: value for name, value in body.items() if name not in UNKEYED_FIELDS}
    digest = hashlib.sha256(orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS))
    digest.update(f"\0{route.route_id}\0{route.updated_at!r}".encode())
    return f"{CACHE_PREFIX}{route.route_id}:{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes  # the answer's JSON
    step: int = 0  # the route step that served it
    cost_nano: int = 0  # what it cost then: what a hit saves

    def stored(self) -> bytes:
        return b"%d %d\n" % (self.step, self.cost_nano) + self.body

    @classmethod
    def from_stored(cls, value: bytes) -> CachedAnswer | None:
        head, newline, body = value.partition(b"\n")
        step, _, cost = head.partition(b" ")
        if not (newline and step.isdigit() and cost.isdigit()):
            return None  # not written by this version: a miss
        return cls(body, int(step), int(cost))

    def served_by(self, step: int, cost_nano: int) -> CachedAnswer:
        return CachedAnswer(self.body, step, cost_nano)

    @classmethod
    def from_json(cls, status: int, body: bytes) -> CachedAnswer | None:
        """The answer of a complete JSON response, if it is a 2xx one worth keeping."""
        if not 200 <= status < 300 or len(body) > MAX_ANSWER_BYTES:
            return None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict) or parsed.get("object") not in ("chat.completion", "list"):
            return None
        return cls(body)

    def as_sse(self, *, include_usage: bool) -> bytes:
        """The answer as the stream a streamed request would have received."""
        completion = orjson.loads(self.body)
        head = {
            "id": completion.get("id", ""),
            "object": "chat.completion.chunk",
            "created": completion.get("created", 0),
            "model": completion.get("model", ""),
        }
        if completion.get("system_fingerprint") is not None:
            head["system_fingerprint"] = completion["system_fingerprint"]

        def chunk(choices: list[Any], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

        events = []
        for choice in completion.get("choices") or []:
            index, message = choice.get("index", 0), choice.get("message") or {}

            def delta(content: Mapping[str, Any], finish: Any = None, at: int = index) -> bytes:
                return chunk([{"index": at, "delta": content, "finish_reason": finish}])

            events.append(delta({"role": "assistant", "content": ""}))
            if message.get("content"):
                events.append(delta({"content": message["content"]}))
            calls = message.get("tool_calls") or []
            if calls:
                events.append(
                    delta({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
                )
            events.append(delta({}, choice.get("finish_reason") or "stop"))
        if include_usage and completion.get("usage") is not None:
            events.append(chunk([], usage=completion["usage"]))
        events.append(b"data: [DONE]\n\n")
        return b"".join(events)


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(slots=True)
class StreamCollector:
    """Puts a chat.completion together from the chunks of a stream, as they pass.

    Feed it the stream as upstream (or the translator) sends it, before a usage chunk is hidden
    from a client that did not ask for it, so that the kept answer has its usage."""

    _reader: EventReader = field(default_factory=EventReader)
    _head: dict[str, Any] = field(default_factory=dict)
    _choices: dict[int, _Choice] = field(default_factory=dict)
    _usage: Any = None
    _size: int = 0
    _done: bool = False
    _spoilt: bool = False  # an error event, an unreadable chunk, or too much to keep

    def feed(self, chunk: bytes) -> None:
        if self._spoilt:
            return
        self._size += len(chunk)
        if self._size > MAX_ANSWER_BYTES:
            self._spoilt = True
            return
        for event in self._reader.feed(chunk):
            if event.data == "[DONE]":
                self._done = True
                continue
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                payload = None
            if not isinstance(payload, dict) or "error" in payload:
                self._spoilt = True
                return
            self._take(payload)

    def _take(self, payload: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint"):
            if payload.get(name) is not None:
                self._head.setdefault(name, payload[name])
        if payload.get("usage") is not None:
            self._usage = payload["usage"]
        for choice in payload.get("choices") or []:
            kept = self._choices.setdefault(choice.get("index", 0), _Choice())
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                kept.content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                into = kept.tool_calls.setdefault(
                    call.get("index", 0), {"type": "function", "function": {"arguments": ""}}
                )
                if call.get("id"):
                    into["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    into["function"]["name"] = function["name"]
                into["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason") is not None:
                kept.finish_reason = choice["finish_reason"]

    def answer(self) -> CachedAnswer | None:
        """The complete answer: only once [DONE] came, every choice finished, and no error."""
        choices = self._choices
        if self._spoilt or not self._done or not choices:
            return None
        if any(choice.finish_reason is None for choice in choices.values()):
            return None
        completion = {**self._head, "object": "chat.completion", "choices": []}
        for index in sorted(choices):
            choice = choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(choice.content)}
            if choice.tool_calls:
                message["content"] = message["content"] or None
                message["tool_calls"] = [choice.tool_calls[i] for i in sorted(choice.tool_calls)]
            completion["choices"].append(
                {"index": index, "message": message, "finish_reason": choice.finish_reason}
            )
        if self._usage is not None:
            completion["usage"] = self._usage
        return CachedAnswer(orjson.dumps(completion))


class ResponseCache:
    def __init__(self, pipe: Pipe, errors: Counter) -> None:
        self._pipe = pipe
        self._errors = errors

    async def lookup(self, key: str) -> CachedAnswer | None:
        """The answer kept under `key`; None when there is none, or Redis cannot say."""
        try:
            (body,) = await self._pipe.execute([("GET", key)])
        except (RedisUnavailable, RedisReplyError, TimeoutError):
            self._errors.inc(operation="route_cache")
            return None
        return None if body is None else CachedAnswer.from_stored(body)

    async def store(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        """Keep `answer` for `ttl` seconds; a Redis error only loses this one entry."""
        try:
            ttl_ms = max(1, round(ttl * 1000))
            await self._pipe.execute([("SET", key, answer.stored(), "PX", ttl_ms)])
        except (RedisUnavailable, RedisReplyError, TimeoutError):
            self._errors.inc(operation="route_cache")
