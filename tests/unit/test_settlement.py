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
        self.down = False

    async def settle(self, batch: list[Settlement]) -> None:
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
