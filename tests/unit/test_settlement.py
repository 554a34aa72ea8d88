"""The settlement queue: nothing lost to a stop in the middle of a flush, or to a Redis outage."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tracemalloc
from typing import Any

import orjson
import pytest

from proxy.settlement import Settler
from shared.limits import Settlement, UnusableSettlement
from shared.metrics import Metrics
from shared.models import Key

KEY = Key(key_id="k", name="k", key_hash="h", created_at=0, updated_at=0)


class SlowEngine:
    """Applies batches after a delay; fails while `down` is set."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.sent: list[tuple[str, int, list[int]]] = []  # every attempt: replica, number, costs
        self.down = False
        self.release: Any = None

    async def settle(self, batch: list[Settlement], replica: str, number: int) -> None:
        self.sent.append((replica, number, [s.cost_nano for s in batch]))
        await asyncio.sleep(0.05)
        if self.down:
            raise ConnectionError("redis is away")
        self.applied += [s.cost_nano for s in batch]


def settler(engine: Any) -> Settler:
    return Settler(engine, Metrics().counter("errors_total", "errors", ("operation",)))


async def test_closing_during_a_flush_applies_everything() -> None:
    engine = SlowEngine()
    queue = settler(engine)
    task = asyncio.create_task(queue.run())
    queue.submit(Settlement(KEY, 1))
    await asyncio.sleep(0.01)  # the flush is under way
    queue.submit(Settlement(KEY, 2))
    queue.close(within=2)
    await asyncio.wait_for(task, 3)
    assert engine.applied == [1, 2]


async def test_settlements_wait_out_an_outage() -> None:
    engine = SlowEngine()
    engine.down = True
    queue = settler(engine)
    task = asyncio.create_task(queue.run())
    for cost in range(5):
        queue.submit(Settlement(KEY, cost))
    await asyncio.sleep(0.3)
    assert engine.applied == [] and len(queue) == 5
    engine.down = False
    await asyncio.sleep(0.6)
    assert engine.applied == [0, 1, 2, 3, 4]
    queue.close(within=1)
    await asyncio.wait_for(task, 2)


async def test_a_failed_batch_is_sent_again_whole_under_its_number() -> None:
    engine = SlowEngine()
    engine.down = True
    queue = settler(engine)
    task = asyncio.create_task(queue.run())
    queue.submit(Settlement(KEY, 1))
    await asyncio.sleep(0.02)  # the first attempt is under way
    queue.submit(Settlement(KEY, 2))
    await asyncio.sleep(0.3)
    engine.down = False
    queue.close(within=2)
    await asyncio.wait_for(task, 3)
    replica, first, _ = engine.sent[0]
    retries = [costs for _, number, costs in engine.sent if number == first]
    assert len(retries) >= 2 and all(costs == [1] for costs in retries)
    assert engine.applied == [1, 2]
    # The later settlement went in a batch of its own, numbered above, from the same replica.
    assert engine.sent[-1] == (replica, first + 1, [2])


async def test_dropped_charges_are_counted_in_rate_limited_error_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = SlowEngine()
    queue = Settler(engine, Metrics().counter("errors_total", "e", ("operation",)), max_pending=2)
    with caplog.at_level(logging.ERROR, logger="gateway.settle"):
        for cost in range(10):
            queue.submit(Settlement(KEY, cost))  # the flusher is not running: 8 dropped
        task = asyncio.create_task(queue.run())
        await asyncio.sleep(0.01)
        queue.submit(Settlement(KEY, 100))  # room again
        queue.close(within=1)  # what was dropped and not reported yet is reported at the stop
        await asyncio.wait_for(task, 2)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert 1 <= len(lines) <= 2
    assert sum(int(re.search(r"dropped (\d+)", line)[1]) for line in lines) == 8  # type: ignore[index]
    assert engine.applied == [0, 1, 100]


def test_the_default_queue_bound_fits_in_a_pod() -> None:
    """A full queue of typical settlements (a usage event each) stays far below a pod's memory."""

    def event() -> bytes:  # what proxy/telemetry.py makes for a call
        return orjson.dumps(
            {
                "event_id": os.urandom(16).hex(),
                "request_id": os.urandom(16).hex(),
                "key_id": "4b0f2d7e-1b9f-4d6c-9a57-5b2d6b9f0c11",
                "model": "gpt-4o-mini-2024-07-18",
                "path": "chat/completions",
                "status": 200,
                "prompt_tokens": 1234,
                "completion_tokens": 567,
                "cached_tokens": 0,
                "cost_nano": 123456789,
                "latency_ms": 1234.567,
                "upstream_ms": 1230.123,
                "streamed": True,
                "time": 1767225600.123456,
            }
        )

    queue = settler(SlowEngine())  # not running: everything submitted stays queued
    count = 10_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(count):
        queue.submit(Settlement(KEY, 123456789, os.urandom(8).hex(), event()))
    size = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    assert len(queue) == count
    assert queue.max_pending * size <= POD_QUEUE_BUDGET


POD_QUEUE_BUDGET = 128 * 1024 * 1024  # of a proxy pod's 1 GiB memory limit (deploy/k8s)


class PickyEngine(SlowEngine):
    """Refuses, applying nothing, every batch holding a settlement of cost 13."""

    async def settle(self, batch: list[Settlement], replica: str, number: int) -> None:
        self.sent.append((replica, number, [s.cost_nano for s in batch]))
        if 13 in (costs := [s.cost_nano for s in batch]):
            raise UnusableSettlement(costs.index(13), "gw:{k}:spend holds a hash")
        self.applied += costs


async def test_a_charge_redis_cannot_take_is_dropped_and_the_rest_of_its_batch_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = PickyEngine()
    queue = settler(engine)
    for cost in (1, 13, 2):
        queue.submit(Settlement(KEY, cost, event=b"{}" if cost == 13 else None))
    task = asyncio.create_task(queue.run())
    queue.close(within=1)
    await asyncio.wait_for(task, 2)
    assert engine.applied == [1, 0, 2]  # its event still goes, at no cost
    assert [number for _, number, _ in engine.sent] == [1, 1]
    assert any(
        "13 nano-USD" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )


async def test_a_drain_returns_once_what_was_queued_before_it_is_applied() -> None:
    engine = SlowEngine()
    engine.down = True
    queue = settler(engine)
    task = asyncio.create_task(queue.run())
    for cost in range(3):
        queue.submit(Settlement(KEY, cost))
    with pytest.raises(TimeoutError):  # Redis is away: nothing can be applied
        await queue.drain(within=0.3)
    engine.down = False
    await queue.drain(within=10)
    assert engine.applied == [0, 1, 2]
    await queue.drain(within=0.1)  # nothing queued since: at once
    queue.close(within=1)
    await asyncio.wait_for(task, 2)
