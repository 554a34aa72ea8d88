"""The route loop's small parts: Retry-After, backoff, cool-down, and where a stream's content
starts."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.metering import StreamMeter
from proxy.routes.attempt import retried, retry_after_of
from proxy.routes.cooldown import CoolDowns
from proxy.routes.formats import OpenAIWatch
from proxy.routes.loop import backoff
from proxy.routes.model import Route, route_of
from shared import tokens


def route(**fields: Any) -> Route:
    step = {"provider": "openai", "model": "m", "retryInterval": "1s", **fields.pop("step", {})}
    steps = [step, *fields.get("more", [])]
    return route_of(
        "r1", "/t/chat/completions", [], steps, fields.get("strategy", "constant"),
        {"enabled": False, "ttl": "1h"}, {"failures": fields.get("failures", 2), "period": "30s"},
    )  # fmt: skip


def headers(**given: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in given.items()}))


def test_only_what_can_succeed_on_retry_is_retried() -> None:
    assert [s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 503, 529) if retried(s)] == [
        408, 409, 429, 500, 503, 529,
    ]  # fmt: skip


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after_of(headers(retry_after="2")) == 2.0
    assert retry_after_of(headers(retry_after="2", retry_after_ms="250")) == 0.25
    soon = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < (retry_after_of(headers(retry_after=soon)) or 0) <= 60
    assert retry_after_of(headers(retry_after="whenever")) is None
    assert retry_after_of(headers()) is None


def test_backoff_is_jittered_doubles_when_exponential_and_yields_to_a_longer_retry_after() -> None:
    constant, exponential = route(), route(strategy="exponential")
    for retry in range(4):
        assert 0.5 <= (backoff(constant, constant.steps[0], retry, None) or 0) <= 1.0
        wait = backoff(exponential, exponential.steps[0], retry, None) or 0
        assert 2**retry / 2 <= wait <= 2**retry
    assert backoff(constant, constant.steps[0], 0, 5.0) == 5.0
    timed = route(step={"timeout": "3s"})
    assert backoff(timed, timed.steps[0], 0, 2.5) == 2.5
    assert backoff(timed, timed.steps[0], 0, 30.0) is None  # longer than the step's timeout


CLAUDE_STEP = {"provider": "anthropic", "model": "claude", "retryInterval": "1s"}


def test_a_step_cools_down_after_its_failures_in_a_row() -> None:
    cool, r = CoolDowns(), route(failures=2, more=[CLAUDE_STEP])
    cool.failed(r, 0, now=100.0)
    cool.succeeded(r, 0)  # not in a row
    cool.failed(r, 0, now=100.0)
    assert not cool.cooling(r, 0, now=100.0)
    cool.failed(r, 0, now=100.0)
    assert cool.cooling(r, 0, now=129.0) and not cool.cooling(r, 1, now=129.0)
    assert not cool.cooling(r, 0, now=130.5)
    never = route(failures=0, more=[CLAUDE_STEP])  # the same route, changed: never cools down
    assert not cool.cooling(never, 0, now=129.0)
    for _ in range(5):
        cool.failed(never, 0, now=100.0)
    assert not cool.cooling(never, 0, now=100.0)


def test_a_cool_down_is_kept_for_the_steps_target_not_its_place() -> None:
    cool, r = CoolDowns(), route(failures=1, more=[CLAUDE_STEP])
    cool.failed(r, 0, now=100.0)
    assert cool.cooling(r, 0, now=101.0)
    # The same route, changed: the dead target moved to second place, still skipped there...
    moved = route_of(
        "r1", "/t/chat/completions", [], [CLAUDE_STEP, {"provider": "openai", "model": "m"}],
        "constant", {"enabled": False, "ttl": "1h"}, {"failures": 1, "period": "30s"},
    )  # fmt: skip
    assert not cool.cooling(moved, 0, now=101.0) and cool.cooling(moved, 1, now=101.0)
    # ...and a first step given another model is another target, tried at once.
    replaced = route(failures=1, step={"model": "m-2"}, more=[CLAUDE_STEP])
    assert not cool.cooling(replaced, 0, now=101.0)


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(delta: Any, finish: Any = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def watch() -> OpenAIWatch:
    return OpenAIWatch(StreamMeter(False, tokens.tiktoken_counter("gpt-4o-mini")))


@pytest.mark.parametrize(
    "preamble",
    [
        chunk({"role": "assistant", "content": ""}),
        chunk({"role": "assistant", "content": None, "refusal": None}),
        event({"choices": [], "prompt_filter_results": []}),  # Azure's filter chunk
        b": keep-alive\n\n",
    ],
)
def test_a_preamble_is_no_content_and_an_error_after_it_is_seen(preamble: bytes) -> None:
    seen = watch()
    relayed, whole = seen.feed(preamble)
    assert relayed == whole == preamble and not seen.content_started
    seen.feed(event({"error": {"message": "quota", "type": "insufficient_quota"}})[:20])
    assert seen.error is None  # split anywhere: not whole yet
    seen.feed(event({"error": {"message": "quota", "type": "insufficient_quota"}})[20:])
    assert seen.error == {"error": {"message": "quota", "type": "insufficient_quota"}}
    assert not seen.content_started


@pytest.mark.parametrize(
    "content",
    [
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}),
        chunk({}, "stop"),
    ],
)
def test_content_starts_with_text_a_tool_call_or_a_finish(content: bytes) -> None:
    seen = watch()
    seen.feed(chunk({"role": "assistant", "content": ""}) + content)
    assert seen.content_started and seen.error is None
    seen.feed(event({"error": {"message": "late"}}))
    assert seen.error is None  # after content: the client's to see, not a failover


def test_a_stream_of_no_content_that_ends_is_complete() -> None:
    seen = watch()
    seen.feed(chunk({"role": "assistant"}) + b"data: [DONE]\n\n")
    assert seen.complete and not seen.content_started
