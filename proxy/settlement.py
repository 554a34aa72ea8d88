"""Stage 5, settle: charges queued by requests, applied to Redis in batches off the request path.

A request only enqueues its settlement, without awaiting, so that neither a disconnecting client
nor a slow Redis can lose it. The queue is flushed as soon as it has anything (spend shows within
a second), retried while Redis is away, and drained on shutdown. The flusher is never cancelled
in the middle of a batch: a batch cut off there could have reached Redis or not.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time

from shared.limits import LimitEngine, Settlement
from shared.metrics import Counter

log = logging.getLogger("gateway.settle")

BATCH = 256
MAX_RETRY_DELAY = 5.0


class Settler:
    def __init__(self, engine: LimitEngine, errors: Counter, max_pending: int = 1_000_000) -> None:
        self._engine = engine
        self._errors = errors
        self._pending: collections.deque[Settlement] = collections.deque()
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        # A batch that failed is sent again as it was, under its id: Redis may have applied it
        # and lost only the reply, and the settle script applies a batch id once.
        self._failed: tuple[str, list[Settlement]] = ("", [])
        self._failing = False
        self._close_by: float | None = None  # monotonic deadline once closing

    def __len__(self) -> int:
        return len(self._pending) + len(self._failed[1])

    def submit(self, settlement: Settlement) -> None:
        if len(self._pending) >= self._max_pending:
            log.error(
                "settlement queue full: dropping a charge of %d nano-USD", settlement.cost_nano
            )
            return
        self._pending.append(settlement)
        self._wake.set()

    async def run(self) -> None:
        """Flush until closed and drained (or out of time to drain)."""
        delay = 0.1
        while True:
            if not self._pending and not self._failed[1]:
                if self._close_by is not None:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if await self._flush_once():
                delay = 0.1
                continue
            if self._close_by is not None and time.monotonic() >= self._close_by:
                log.error("stopping with %d settlements not applied", len(self))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def close(self, within: float) -> None:
        """Ask `run` to drain what is queued and return, trying for at most `within` seconds."""
        self._close_by = time.monotonic() + within
        self._wake.set()

    async def _flush_once(self) -> bool:
        batch_id, batch = self._failed
        if not batch:
            batch_id = os.urandom(16).hex()
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
        try:
            await self._engine.settle(batch, batch_id)
        except Exception as error:
            self._failed = (batch_id, batch)
            self._errors.inc(operation="settle")
            if not self._failing:
                log.warning("settling spend failed, will retry: %s", error)
            self._failing = True
            return False
        self._failed = ("", [])
        if self._failing:
            log.info("settling spend recovered")
        self._failing = False
        return True
