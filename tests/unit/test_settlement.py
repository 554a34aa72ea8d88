"""The settlement queue: nothing lost to a stop in the middle of a flush, or to a Redis outage."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.settlement import Settler
from shared.limits import Settlement
from shared.metrics import Metrics
from shared.models import Key

KEY = Key(key_id="k", name="k", key_hash="h", created_at=0, updated_at=0)


class SlowEngine:
    """Applies batches after a delay; fails while `down` is set."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.sent: list[tuple[str, list[int]]] = []  # every attempt: batch id and costs
        self.down = False

    async def settle(self, batch: list[Settlement], batch_id: str) -> None:
        self.sent.append((batch_id, [s.cost_nano for s in batch]))
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


async def test_a_failed_batch_is_sent_again_whole_under_its_id() -> None:
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
    first_id = engine.sent[0][0]
    retries = [sent for sent in engine.sent if sent[0] == first_id]
    assert len(retries) >= 2 and all(costs == [1] for _, costs in retries)
    assert engine.applied == [1, 2]
    assert engine.sent[-1][0] != first_id  # the later settlement went in a batch of its own
