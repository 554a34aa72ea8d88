"""The key snapshot at scale: load time and memory of a proxy holding N keys, the cost of an
incremental refresh, and whether requests stall while refreshes run."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import orjson

from proxy.snapshot import KEYS, KeySnapshot, SnapshotRefresher
from shared.metrics import Metrics
from shared.pg import LazyConnection
from tests.bench import loadgen
from tests.bench.gateway import BENCH_KEYS, Stores, insert_keys, start_proxy
from tests.bench.legs import Starters
from tests.bench.procs import Server, rss_mb, wait_http

CHANGED = 100
# Always the same filler keys, so that every refresh re-reads exactly these (the snapshot
# re-reads whatever changed in its last 30 s).
CHANGED_IDS = [uuid.UUID(int=i + 1) for i in range(CHANGED)]
REFRESH_ROUNDS = 5
LOAD_TIMEOUT = 120.0  # six times the 20 s target
# Tried when the proxy cannot load with its defaults: says whether the read timeout is the cause.
LONG_READ_TIMEOUT = {"POSTGRESQL_READ_TIME_OUT": "120s"}
FILLERS = "name LIKE 'filler %'"
TOUCH = "UPDATE keys SET updated_at = now() WHERE key_id = ANY($1::uuid[])"


@dataclass
class ScaleResult:
    keys: int  # live keys in the database
    inprocess_load_s: float  # the first SnapshotRefresher.refresh(), in this process
    refresh_ms: list[float]  # incremental refreshes with CHANGED keys changed, in this process
    load_s: float | None = None  # proxy process start until /api/health answers 200
    loaded_with: str = ""  # settings beyond the defaults the proxy needed to load
    failures: list[str] = field(default_factory=list)  # loads that did not finish, and why
    rss_mb: float | None = None
    during_churn: dict[str, Any] = field(default_factory=dict)  # latency while keys change

    @property
    def refresh_median_ms(self) -> float:
        return median(self.refresh_ms)


async def measure_refresh(stores: Stores) -> tuple[float, list[float]]:
    """Times a full SnapshotRefresher load, then refreshes after CHANGED keys changed."""
    database = LazyConnection(stores.postgres_settings())
    errors = Metrics().counter("bench_postgres_errors_total", "unused", ("operation",))
    refresher = SnapshotRefresher(database, KeySnapshot(), 1.0, errors, KEYS)
    connection = await stores.connect()
    try:
        started = time.perf_counter()
        await refresher.refresh()
        load_s = time.perf_counter() - started
        times = []
        for _ in range(REFRESH_ROUNDS):
            await connection.execute(TOUCH, CHANGED_IDS)
            started = time.perf_counter()
            await refresher.refresh()
            times.append((time.perf_counter() - started) * 1000)
        return load_s, times
    finally:
        await connection.close()
        await database.close()


async def churn_while(proc: subprocess.Popen[str], stores: Stores) -> None:
    """Changes CHANGED keys once per refresh interval until proc ends."""
    connection = await stores.connect()
    try:
        while proc.poll() is None:
            await connection.execute(TOUCH, CHANGED_IDS)
            await asyncio.sleep(1.0)
    finally:
        await connection.close()


def snapshot_size(proxy: Server) -> int:
    with urllib.request.urlopen(proxy.url("/api/health"), timeout=5) as response:
        return int(orjson.loads(response.read())["keys"])


def measure(starters: Starters, keys: int, requests: int) -> ScaleResult:
    """A refresh in-process, then a proxy process loading every key: with its defaults, or
    failing that with a long read timeout, to tell what stops it."""
    result = ScaleResult(keys, *asyncio.run(measure_refresh(starters.stores)))
    for settings in ({}, LONG_READ_TIMEOUT):
        if load_and_serve(starters, result, settings, requests):
            break
    return result


def load_and_serve(
    starters: Starters, result: ScaleResult, settings: dict[str, str], requests: int
) -> bool:
    started = time.perf_counter()
    proxy = start_proxy(
        starters.processes, starters.stores, starters.upstream, "proxy-scale", settings=settings
    )
    try:
        wait_http(proxy, "/api/health", LOAD_TIMEOUT)
    except RuntimeError:
        last_line = proxy.log_tail(1) or "no log line"
        result.failures.append(f"not loaded within {LOAD_TIMEOUT:.0f}s: {last_line}")
        starters.processes.stop(proxy)
        return False
    try:
        result.load_s = time.perf_counter() - started
        result.loaded_with = " ".join(f"{k}={v}" for k, v in settings.items())
        if snapshot_size(proxy) != result.keys:
            result.failures.append(f"the snapshot holds {snapshot_size(proxy)} keys")
        run = loadgen.spawn("latency", starters.openai_leg(proxy).chat, requests=requests)
        asyncio.run(churn_while(run, starters.stores))
        result.during_churn = loadgen.results_of(run, timeout=300)
        result.rss_mb = rss_mb(proxy.pid)
        return True
    finally:
        starters.processes.stop(proxy)


async def count_fillers(stores: Stores) -> int:
    connection = await stores.connect()
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM keys WHERE {FILLERS}"))
    finally:
        await connection.close()


def top_up(stores: Stores, keys: int) -> None:
    """Inserts filler keys until, with the bench keys, the database holds `keys` live keys."""
    have = asyncio.run(count_fillers(stores))
    if keys - BENCH_KEYS > have:
        asyncio.run(insert_keys(stores, have, keys - BENCH_KEYS - have))
