"""Jobs not yet charged, in Redis, so that every replica, and a restarted one, knows them.

`gw:jobs` maps each such job id to its key's id (the index a reader of a job id, or the
watcher, starts from); `gw:{key_id}:jobs` maps the key's job ids to their records. Removing a
record is the once-only claim: `HDEL` answers 1 to exactly one of any number of callers.
"""

from __future__ import annotations

import random

from proxy.jobs.kinds import Job
from shared.limit_keys import PREFIX
from shared.redispipe import Pipe

JOBS_INDEX = f"{PREFIX}jobs"
LEASE = f"{PREFIX}jobs:lease"
SCAN_COUNT = 500
# Takes the lease, or extends it for the replica that holds it.
LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def jobs_key(key_id: str) -> str:
    return f"{PREFIX}{{{key_id}}}:jobs"


class JobStore:
    def __init__(self, redis: Pipe) -> None:
        self._redis = redis

    async def add(self, job: Job) -> None:
        await self._redis.execute(
            [
                ("HSET", jobs_key(job.key_id), job.job_id, job.record()),
                ("HSET", JOBS_INDEX, job.job_id, job.key_id),
            ]
        )

    async def find(self, job_id: str) -> Job | None:
        [key_id] = await self._redis.execute([("HGET", JOBS_INDEX, job_id)])
        if key_id is None:
            return None
        [record] = await self._redis.execute([("HGET", jobs_key(key_id.decode()), job_id)])
        return None if record is None else Job.of_record(job_id, key_id.decode(), record)

    async def pending(self, limit: int) -> list[Job]:
        """Jobs not yet charged, at most `limit` of them picked at random, so that every job is
        picked in time however many there are; index entries without a record are cleared."""
        entries: list[tuple[str, str]] = []
        cursor = b"0"
        while True:
            [(cursor, flat)] = await self._redis.execute(
                [("HSCAN", JOBS_INDEX, cursor, "COUNT", SCAN_COUNT)]
            )
            entries += [
                (j.decode(), k.decode()) for j, k in zip(flat[::2], flat[1::2], strict=True)
            ]
            if cursor == b"0":
                break
        if len(entries) > limit:
            entries = random.sample(entries, limit)
        if not entries:
            return []
        records = await self._redis.execute(
            [("HGET", jobs_key(key_id), job_id) for job_id, key_id in entries]
        )
        orphans = [
            job_id for (job_id, _), record in zip(entries, records, strict=True) if not record
        ]
        if orphans:
            await self._redis.execute([("HDEL", JOBS_INDEX, *orphans)])
        return [
            Job.of_record(job_id, key_id, record)
            for (job_id, key_id), record in zip(entries, records, strict=True)
            if record
        ]

    async def claim(self, job: Job) -> bool:
        """True for the one caller that removes the job: it, and only it, charges the job."""
        removed, _ = await self._redis.execute(
            [("HDEL", jobs_key(job.key_id), job.job_id), ("HDEL", JOBS_INDEX, job.job_id)]
        )
        return bool(removed)

    async def lead(self, holder: str, lease_ms: int) -> bool:
        """Whether `holder` holds the watcher's lease for the next `lease_ms`."""
        [held] = await self._redis.execute([("EVAL", LEAD, 1, LEASE, holder, lease_ms)])
        return bool(held)
