"""The routes' response cache against a real Redis: what is keyed, kept, and how it is served."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.routes.cache import (
    CACHE_PREFIX,
    CachedAnswer,
    ResponseCache,
    StreamCollector,
    cache_key,
)
from proxy.routes.model import Route, route_of
from shared.config import Settings
from shared.limit_keys import PREFIX
from shared.metrics import Counter, Metrics
from shared.redispipe import RedisPipe


def errors_counter() -> Counter:
    return Metrics().counter("errors_total", "errors", ("operation",))


@pytest.fixture
def route() -> Route:
    return route_of(
        str(uuid.uuid4()), "/team/chat/completions", [], [{"provider": "openai", "model": "m"}],
        "constant", {"enabled": True, "ttl": "1h"}, {"failures": 3, "period": "30s"},
        updated_at=1_700_000_000.25,
    )  # fmt: skip


@pytest.fixture
def cache(pipe: RedisPipe) -> ResponseCache:
    return ResponseCache(pipe, errors_counter())


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Say hi"}],
    "temperature": 0,
    "max_tokens": 50,
}
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi there",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "f", "arguments": '{"a": 1}'}},
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}  # fmt: skip


def test_only_deterministic_requests_have_a_key(route: Route) -> None:
    assert cache_key(route, BODY) is not None
    assert cache_key(route, {**BODY, "temperature": 0.0}) is not None
    assert cache_key(route, {**BODY, "temperature": 0.7, "seed": 3}) is not None
    for undetermined in (
        {**BODY, "temperature": 0.7},
        {k: v for k, v in BODY.items() if k != "temperature"},
        {**BODY, "temperature": False},
        {**BODY, "temperature": 1, "seed": True},
        {**BODY, "temperature": "0"},
    ):
        assert cache_key(route, undetermined) is None


def test_the_key_covers_every_field_but_the_delivery_ones(route: Route) -> None:
    key = cache_key(route, BODY)
    assert key is not None and key.startswith(f"{PREFIX}route-cache:{route.route_id}:")
    assert key.startswith(CACHE_PREFIX)
    same = {**BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u",
            "metadata": {"team": "a"}}  # fmt: skip
    assert cache_key(route, same) == key
    assert cache_key(route, dict(reversed(list(BODY.items())))) == key  # canonical JSON
    different = [
        {**BODY, "model": "gpt-4o-mini"},
        {**BODY, "temperature": 0, "seed": 1},
        {**BODY, "tools": [TOOL]},
        {**BODY, "max_tokens": 51},
        {**BODY, "messages": [{"role": "user", "content": "Say hello"}]},
        {**BODY, "messages": [{"role": "system", "content": "Say hi"}]},
    ]
    keys = {cache_key(route, body) for body in different}
    assert key not in keys and len(keys) == len(different)
    assert cache_key(replace(route, updated_at=route.updated_at + 1), BODY) != key
    assert cache_key(replace(route, route_id=str(uuid.uuid4())), BODY) != key


async def test_a_stored_answer_is_a_hit_and_others_miss(
    route: Route, cache: ResponseCache, redis_client: redis.Redis
) -> None:
    key = cache_key(route, BODY)
    assert key is not None
    assert await cache.lookup(key) is None
    answer = CachedAnswer.from_json(200, orjson.dumps(COMPLETION))
    assert answer is not None
    await cache.store(key, answer, route.cache_ttl)
    hit = await cache.lookup(key)
    assert hit is not None and orjson.loads(hit.body) == COMPLETION
    stream_form = cache_key(route, {**BODY, "stream": True})
    assert stream_form is not None and await cache.lookup(stream_form) == hit
    for body in ({**BODY, "model": "gpt-4o-mini"}, {**BODY, "tools": [TOOL]},
                 {**BODY, "max_tokens": 10}, {**BODY, "seed": 5}):  # fmt: skip
        other = cache_key(route, body)
        assert other is not None and await cache.lookup(other) is None
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= 3600 * 1000


def parse_sse(stream: bytes) -> list[Any]:
    events = [block.removeprefix(b"data: ") for block in stream.split(b"\n\n") if block]
    return [e if e == b"[DONE]" else orjson.loads(e) for e in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_json_answer_replays_as_valid_chunks(include_usage: bool) -> None:
    answer = CachedAnswer.from_json(200, orjson.dumps(COMPLETION))
    assert answer is not None
    events = parse_sse(answer.as_sse(include_usage=include_usage))
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert usage_chunks[0].usage is not None and usage_chunks[0].usage.total_tokens == 12
    # Put together again, the stream is the answer it came from.
    collector = StreamCollector()
    collector.feed(answer.as_sse(include_usage=True))
    again = collector.answer()
    assert again is not None
    assert ChatCompletion.model_validate_json(again.body) == ChatCompletion.model_validate(
        COMPLETION
    )


def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
    payload = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"  # fmt: skip


USAGE = b"data: " + orjson.dumps(
    {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
) + b"\n\n"  # fmt: skip
STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    USAGE,
    b"data: [DONE]\n\n",
]


def test_a_complete_stream_becomes_a_json_answer() -> None:
    collector = StreamCollector()
    whole = b"".join(STREAM)
    for i in range(0, len(whole), 7):  # split anywhere
        collector.feed(whole[i : i + 7])
    answer = collector.answer()
    assert answer is not None
    completion = ChatCompletion.model_validate_json(answer.body)
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    replayed = parse_sse(answer.as_sse(include_usage=False))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in replayed[:-1])
    assert text == "Hello"


CUT = {
    "no [DONE]": STREAM[:-1],
    "no finish": [STREAM[0], STREAM[1], STREAM[-1]],
    "cut mid-event": [*STREAM[:3], STREAM[3][:20]],
    "error event": [STREAM[0], STREAM[1], b'data: {"error": {"message": "overloaded"}}\n\n'],
    "nothing": [b"data: [DONE]\n\n"],
    "not JSON": [STREAM[0], b"data: {oops\n\n", *STREAM[3:]],
}


@pytest.mark.parametrize("events", CUT.values(), ids=CUT.keys())
def test_a_cut_or_failed_stream_is_no_answer(events: list[bytes]) -> None:
    collector = StreamCollector()
    for event in events:
        collector.feed(event)
    assert collector.answer() is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, orjson.dumps(COMPLETION)),
        (429, b'{"error": {"message": "slow down"}}'),
        (200, b'{"error": {"message": "in a 200"}}'),
        (200, b"not json"),
        (200, b"[1, 2]"),
        (200, orjson.dumps({**COMPLETION, "padding": "x" * 1024 * 1024})),
    ],
)
def test_only_a_2xx_answer_is_kept(status: int, body: bytes) -> None:
    assert CachedAnswer.from_json(status, body) is None


def test_an_embeddings_answer_is_kept() -> None:
    embedding = {"object": "embedding", "index": 0, "embedding": [0.1]}
    body = orjson.dumps({"object": "list", "data": [embedding], "model": "e"})
    assert CachedAnswer.from_json(200, body) == CachedAnswer(body)


async def test_redis_away_is_a_miss_not_a_failure(settings: Settings, route: Route) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    pipe = RedisPipe(replace(settings.redis, hosts=("127.0.0.1",), port=port))
    errors = errors_counter()
    cache = ResponseCache(pipe, errors)
    key = cache_key(route, BODY)
    assert key is not None
    try:
        assert await cache.lookup(key) is None
        await cache.store(key, CachedAnswer(b"{}"), 60)
    finally:
        await pipe.close()
    assert errors.series(operation="route_cache").total == 2
