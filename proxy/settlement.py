"""Stage 5, settle: charges queued by requests, applied to Redis in batches off the request path.

A request only enqueues its settlement, without awaiting, so that neither a disconnecting client
nor a slow Redis can lose it. The queue is flushed as soon as it has anything (spend shows within
a second), retried while Redis is away, and drained on shutdown. The flusher is never cancelled
in the middle of a batch: a batch cut off there could have reached Redis or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time

from shared.limits import LimitEngine, Settlement, UnusableSettlement
from shared.logs import Throttle
from shared.metrics import Counter

log = logging.getLogger("gateway.settle")

BATCH = 256
MAX_RETRY_DELAY = 5.0
# A queued call costs about 650 bytes (tests/unit/test_settlement.py measures it): this bound
# holds under 100 MB, a tenth of a proxy pod's memory limit, and about 150 s of a Redis outage
# at 1,000 calls a second.
MAX_PENDING = 150_000
DROP_LOG_INTERVAL = 10.0  # seconds between the error lines that count dropped charges


class Settler:
    def __init__(
        self, engine: LimitEngine, errors: Counter, max_pending: int = MAX_PENDING
    ) -> None:
        self._engine = engine
        self._errors = errors
        self._pending: collections.deque[Settlement] = collections.deque()
        self.max_pending = max_pending
        self._wake = asyncio.Event()
        # Batches are numbered, per process, from 1 up. One that failed is sent again as it was,
        # under its number: Redis may have applied it and lost only the reply, and the settle
        # script applies a replica's batch only if its number is above the last one applied.
        self._replica = os.urandom(8).hex()
        self._number = 0
        self._failed: list[Settlement] = []
        self._failing = False
        self._close_by: float | None = None  # monotonic deadline once closing
        self._dropped = self._dropped_nano = 0  # since the last line that reported drops
        self._drop_line = Throttle(DROP_LOG_INTERVAL)
        # Settlements queued and applied since start, so that `drain` knows when what was queued
        # before it has reached Redis; `_retry_now` cuts a retry's back-off short for it.
        self._queued = self._applied = 0
        self._progress = asyncio.Event()
        self._retry_now = asyncio.Event()
        # Admissions whose callers left release their reservations through the queue.
        engine.release = self.submit

    def __len__(self) -> int:
        return len(self._pending) + len(self._failed)

    def submit(self, settlement: Settlement) -> None:
        pending = self._pending
        if len(pending) >= self.max_pending:
            self._dropped += 1
            self._dropped_nano += settlement.cost_nano
            if self._drop_line.due():
                self._report_dropped()
            return
        if len(pending) >= BATCH and settlement.event is not None:
            # Backed up (Redis away): keep an exact-size copy of the event, not orjson's buffer
            # of several KB.
            settlement = Settlement(
                settlement.key,
                settlement.cost_nano,
                settlement.reservation,
                bytes(memoryview(settlement.event)),
            )
        pending.append(settlement)
        self._queued += 1
        self._wake.set()

    def _report_dropped(self) -> None:
        log.error(
            "settlement queue full (%d calls): dropped %d charges, %d nano-USD in all",
            self.max_pending,
            self._dropped,
            self._dropped_nano,
        )
        self._dropped = self._dropped_nano = 0

    async def run(self) -> None:
        """Flush until closed and drained (or out of time to drain)."""
        try:
            await self._flush_until_closed()
        finally:
            if self._dropped:
                self._report_dropped()

    async def _flush_until_closed(self) -> None:
        delay = 0.1
        while True:
            if not self._pending and not self._failed:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), delay)
            self._retry_now.clear()
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def drain(self, within: float) -> None:
        """Return once every settlement queued before this call is applied; TimeoutError after
        `within` seconds."""
        target = self._queued
        async with asyncio.timeout(within):
            while self._applied < target:
                progress = self._progress
                self._wake.set()
                self._retry_now.set()
                await progress.wait()

    def close(self, within: float) -> None:
        """Ask `run` to drain what is queued and return, trying for at most `within` seconds."""
        self._close_by = time.monotonic() + within
        self._wake.set()

    async def _flush_once(self) -> bool:
        batch = self._failed
        if not batch:
            self._number += 1
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
        try:
            await self._engine.settle(batch, self._replica, self._number)
        except UnusableSettlement as unusable:
            # Sent again at once without that charge, under the same number: nothing was applied.
            # Its usage event still goes.
            dropped = batch.pop(unusable.index)
            log.error(
                "dropping a charge of %d nano-USD that Redis cannot take: %s",
                dropped.cost_nano,
                unusable,
            )
            if dropped.event is not None:
                batch.insert(unusable.index, Settlement(dropped.key, 0, "", dropped.event))
            else:
                self._applied += 1  # done with, as far as a drain is concerned
            self._failed = batch
            return True
        except Exception as error:
            self._failed = batch
            self._errors.inc(operation="settle")
            if not self._failing:
                log.warning("settling spend failed, will retry: %s", error)
            self._failing = True
            return False
        self._failed = []
        self._applied += len(batch)
        self._progress.set()
        self._progress = asyncio.Event()
        if self._failing:
            log.info("settling spend recovered")
        self._failing = False
        if self._dropped and self._drop_line.due():
            self._report_dropped()
        return True
