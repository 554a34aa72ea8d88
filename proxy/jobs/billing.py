"""Charging a finished job once, through the settlement path, with a usage event like a call's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from proxy.calls import Call
from proxy.jobs.kinds import Job, Kind, cost_of, is_priced, usage_of
from proxy.jobs.store import JobStore
from proxy.settlement import Settler
from proxy.snapshot import KeySnapshot
from proxy.targets import Targets
from proxy.telemetry import ProxyMetrics, usage_event
from shared.limit_keys import to_nano, to_usd
from shared.limits import Settlement
from shared.logs import Throttle
from shared.models import Key
from shared.pricing import Pricing, Rates

log = logging.getLogger("gateway.jobs")

MAX_UNRECORDED = 10_000


class Jobs:
    def __init__(
        self,
        store: JobStore,
        snapshot: KeySnapshot,
        pricing: Pricing,
        settler: Settler,
        metrics: ProxyMetrics,
        targets: Targets,
    ) -> None:
        self.store = store
        self._targets = targets
        self._snapshot = snapshot
        self._pricing = pricing
        self._settler = settler
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure_line = Throttle(10.0)
        self._failures = 0
        # Jobs created while Redis was away, recorded by the watcher once it is back.
        self._unrecorded: list[Job] = []

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a request's job work apart from it, so that a client leaving cannot cut it off."""
        task = asyncio.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def record(self, job: Job) -> None:
        try:
            await self.store.add(job)
        except Exception:
            if len(self._unrecorded) < MAX_UNRECORDED:
                self._unrecorded.append(job)
            raise

    async def record_late(self) -> None:
        """Record the jobs whose creation found Redis away; raises while it still is."""
        while self._unrecorded:
            await self.store.add(self._unrecorded[-1])
            self._unrecorded.pop()

    async def drain(self, within: float) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=within)

    async def _logged(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as error:
            self._failures += 1
            if self._failure_line.due():  # Redis away: every job read and record fails alike
                log.error(
                    "recording or charging a job failed (%d times since the last such line): %s",
                    self._failures,
                    error,
                )
                self._failures = 0

    async def finished(self, job: Job, resource: dict[str, Any]) -> None:
        """Charge a job upstream reports done, unless another replica or a read already did."""
        key = self._snapshot.by_id(job.key_id)
        if key is None:
            if self._snapshot.loaded:  # the key was deleted: nothing left to charge
                log.warning("job %s belongs to a deleted key: not charged", job.job_id)
                await self.store.claim(job)
            return
        if await self.store.claim(job):
            self._charge(job, key, resource)

    async def finished_by_id(self, kind: Kind, job_id: str, resource: dict[str, Any]) -> None:
        job = await self.store.find(job_id)
        if job is not None and job.kind is kind:
            await self.finished(job, resource)

    def _charge(self, job: Job, key: Key, resource: dict[str, Any]) -> None:
        usage = usage_of(job.kind, resource)
        reported = resource.get("model")
        reported = reported if isinstance(reported, str) else ""
        model, rates = self._rates(job.kind, reported, job.model)
        if rates is not None:
            cost = to_nano(cost_of(job.kind, rates, usage))
        else:
            cost = 0
            self._metrics.unpriced.inc(model=model or "unknown")
        by_model = self._metrics.of_model(model)
        by_model.prompt_tokens.inc(usage.prompt_tokens)
        by_model.completion_tokens.inc(usage.completion_tokens)
        by_model.cost.inc(to_usd(cost))
        call = Call(
            request_id=job.job_id,
            key=key,
            # A job whose setting has gone since is still charged; its event names no setting.
            target=self._targets.of_job(job.setting_id) or self._targets.default,
            endpoint=f"{job.kind.root}/{job.job_id}",
            body=b"",
            model=job.model,
            status=200,
            usage=usage,
            reported_model=reported,
        )
        self._settler.submit(Settlement(key, cost, "", usage_event(call, cost, 0.0)))
        log.info(
            "job charged",
            extra={"job_id": job.job_id, "key_id": key.key_id, "model": model, "cost_nano": cost},
        )

    def _rates(self, kind: Kind, reported: str, requested: str) -> tuple[str, Rates | None]:
        """The model upstream reports if it is priced for the kind, else the one first named."""
        for model in (reported, requested):
            rates = self._pricing.rates(model) if model else None
            if rates is not None and is_priced(kind, rates):
                return model, rates
        return reported or requested, None


JOBS = web.AppKey("jobs", Jobs)
