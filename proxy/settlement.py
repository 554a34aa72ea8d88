"""Stage 5, settle: charges queued by requests, applied to Redis in batches off the request path.

A request only enqueues its settlement, without awaiting, so that neither a disconnecting client
nor a slow Redis can lose it. The queue is flushed as soon as it has anything (spend shows within
a second), retried while Redis is away, and drained on shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from shared.limits import LimitEngine, Settlement
from shared.metrics import Counter
from shared.runtime import raise_if_cancelled

log = logging.getLogger("gateway.settle")

BATCH = 256


class Settler:
    def __init__(self, engine: LimitEngine, errors: Counter, max_pending: int = 1_000_000) -> None:
        self._engine = engine
        self._errors = errors
        self._pending: collections.deque[Settlement] = collections.deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._failing = False

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, settlement: Settlement) -> None:
        if len(self._pending) >= self._max_pending:
            log.error(
                "settlement queue full: dropping a charge of %d nano-USD", settlement.cost_nano
            )
            return
        self._pending.append(settlement)
        self._wake.set()

    async def run(self) -> None:
        delay = 0.1
        while True:
            raise_if_cancelled()
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                raise_if_cancelled()
                if await self._flush_once():
                    delay = 0.1
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _flush_once(self) -> bool:
        batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
        try:
            await self._engine.settle(batch)
        except Exception as error:
            self._pending.extendleft(reversed(batch))
            raise_if_cancelled()
            self._errors.inc(operation="settle")
            if not self._failing:
                log.warning("settling spend failed, will retry: %s", error)
            self._failing = True
            return False
        if self._failing:
            log.info("settling spend recovered")
        self._failing = False
        return True

    async def drain(self, within: float) -> None:
        """Apply everything queued, for a graceful stop."""
        try:
            async with asyncio.timeout(within):
                while self._pending:
                    if not await self._flush_once():
                        await asyncio.sleep(0.2)
        except TimeoutError:
            log.error("stopping with %d settlements not applied", len(self._pending))
