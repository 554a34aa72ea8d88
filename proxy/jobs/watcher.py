"""Polls upstream for the jobs not yet charged, and charges each one that has finished.

One replica polls at a time, the holder of a short Redis lease; should it stop, another takes
over within a few intervals. Charging stays once-only whoever polls (JobStore.claim).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from proxy.jobs.billing import JOBS, Jobs
from proxy.jobs.kinds import Job, is_finished, resource_of
from proxy.jobs.store import JobStore
from proxy.paths import upstream_url
from proxy.targets import Targets
from proxy.typedefs import LIMITS, METRICS, PRICING, SESSION, SETTLER, SNAPSHOT, TARGETS
from proxy.upstream import gateway_headers
from shared.runtime import raise_if_cancelled, stop_task

log = logging.getLogger("gateway.jobs")

POLL_INTERVAL = 30.0  # seconds; jobs take minutes to hours
LEASES_PER_INTERVAL = 3  # the lease outlives a few missed renewals
CONCURRENT_POLLS = 8
MAX_POLLS = 1000  # jobs read per interval, picked at random among more
POLL_TIMEOUT = 30.0
DRAIN_TIMEOUT = 5.0


class JobWatcher:
    def __init__(self, jobs: Jobs, session: aiohttp.ClientSession, targets: Targets) -> None:
        self._jobs = jobs
        self._session = session
        self._targets = targets
        self._holder = os.urandom(8).hex()
        self._polls = asyncio.Semaphore(CONCURRENT_POLLS)
        self._failing = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self._jobs.record_late()
                if await self._jobs.store.lead(self._holder, lease_ms()):
                    await self.poll_once()
                self._failing = False
            except Exception as error:
                raise_if_cancelled()
                if not self._failing:
                    log.warning("polling jobs failed, will retry: %s", error)
                self._failing = True

    async def poll_once(self) -> None:
        pending = await self._jobs.store.pending(MAX_POLLS)
        unread = await asyncio.gather(*(self._poll(job) for job in pending))
        if any(unread):
            log.warning(
                "%d of %d pending jobs could not be read upstream", sum(unread), len(unread)
            )

    async def _poll(self, job: Job) -> bool:
        """Whether the job could not be read."""
        async with self._polls:
            resource = await self._fetch(job)
        if resource is not None and is_finished(job.kind, resource):
            await self._jobs.finished(job, resource)
        return resource is None

    async def _fetch(self, job: Job) -> dict[str, Any] | None:
        target = self._targets.of_job(job.setting_id)
        if target is None:
            return None  # its setting is gone, or not loaded yet: read again later
        url = upstream_url(target.base_url, f"{job.kind.root}/{job.job_id}", "")
        try:
            async with self._session.get(
                url,
                headers=gateway_headers(target, job.request_id),
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT),
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
        except (TimeoutError, aiohttp.ClientError):
            return None
        if answer.status == 404:  # upstream no longer knows it: nothing left to charge
            log.warning("job %s is unknown upstream: dropped uncharged", job.job_id)
            await self._jobs.store.claim(job)
            return {}
        return resource_of(body) if answer.status == 200 else None


def lease_ms() -> int:
    return int(POLL_INTERVAL * LEASES_PER_INTERVAL * 1000)


async def job_watcher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: after the limit engine, the upstream session and the key snapshot."""
    app[JOBS] = jobs = Jobs(
        JobStore(app[LIMITS].redis),
        app[SNAPSHOT],
        app[PRICING],
        app[SETTLER],
        app[METRICS],
        app[TARGETS],
    )
    watcher = JobWatcher(jobs, app[SESSION], app[TARGETS])
    task = asyncio.create_task(watcher.run(), name="job-watcher")
    yield
    await stop_task(task)
    await jobs.drain(DRAIN_TIMEOUT)
