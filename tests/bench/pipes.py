"""Micro-benchmark of the pipes: `python -m tests.bench.pipes` (deploy/local on PYTHONPATH).

µs per batch of one EVALSHA through RedisPipe to a redis-server and through ClusterPipe to a
cluster of three masters, all started here from the same binary, on uvloop as the proxy runs:
wall time and this process's CPU (time.process_time: Redis's own time is not the proxy's) of
batches one after another, and CPU with 50 batches in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

import services
import uvloop

from shared.clusterpipe import ClusterPipe
from shared.config import RedisSettings
from shared.redispipe import Pipe, RedisPipe
from tests.redisdeploy import ClusterDeployment

SCRIPT = "return redis.call('GET', KEYS[1])"  # reads: no fsync on the durable cluster nodes
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
SEQUENTIAL, IN_FLIGHT, ROUNDS = 20_000, 50, 1_000


async def measure(pipe: Pipe) -> tuple[float, float, float]:
    """µs per batch: wall and CPU of batches one after another, CPU of IN_FLIGHT at a time."""
    await pipe.execute([("SCRIPT", "LOAD", SCRIPT)])
    batch = [("EVALSHA", SHA, 1, "gw:{bench-key}:spend")]
    for _ in range(1000):  # warm-up: connections open, caches filled
        await pipe.execute(batch)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(SEQUENTIAL):
        await pipe.execute(batch)
    wall = (time.perf_counter() - started) * 1e6 / SEQUENTIAL
    cpu = (time.process_time() - cpu_started) * 1e6 / SEQUENTIAL
    started = time.process_time()
    for _ in range(ROUNDS):
        await asyncio.gather(*(pipe.execute(batch) for _ in range(IN_FLIGHT)))
    return wall, cpu, (time.process_time() - started) * 1e6 / (ROUNDS * IN_FLIGHT)


async def main(single: RedisSettings, cluster: RedisSettings) -> None:
    pipes: list[tuple[str, Pipe]] = [
        ("RedisPipe", RedisPipe(single)),
        ("ClusterPipe", ClusterPipe(cluster)),
        ("RedisPipe (again)", RedisPipe(single)),
        ("ClusterPipe (again)", ClusterPipe(cluster)),
    ]
    for label, pipe in pipes:
        wall, cpu, in_flight = await measure(pipe)
        print(
            f"{label:>20}: one at a time {wall:5.1f} µs wall, {cpu:5.1f} µs CPU;"
            f" {IN_FLIGHT} in flight {in_flight:5.1f} µs CPU"
        )
        await pipe.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-pipes-") as directory:
        base = RedisSettings(hosts=(services.HOST,))
        with (
            services.Redis(Path(directory) / "single") as server,
            ClusterDeployment(Path(directory) / "cluster") as deployment,
        ):
            single = RedisSettings(hosts=(server.host,), port=server.port)
            uvloop.run(main(single, deployment.settings(base)))
