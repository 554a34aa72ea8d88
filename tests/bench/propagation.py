"""How fast a revocation reaches the proxy, and what a burst of changes costs its requests.

    .venv/bin/python -m tests.bench.propagation [--revocations 100] [--burst-seconds 5]

keymgmt, one proxy (IN_MEMORY_DB_UPDATE_INTERVAL=60s, so only the change feed can be quick) and
the fake upstream run as their own processes. Each revocation: a fresh key, served once, then
PATCH revoked; the time runs from keymgmt's 200 to the proxy's first 401, the proxy being asked
without pause meanwhile. Then the proxy's latency, sequential calls, without and then during
100 changes a second. Postgres and Redis as for tests/bench/run.py; its own database
`gateway_bench_propagation` (dropped at the end) and Redis db TEST_REDIS_DB (default 14, emptied).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from shared.changes import CHANNEL, KEY
from tests.bench import gateway
from tests.bench.procs import (
    HOST,
    PYTHON,
    ROOT,
    Processes,
    Server,
    cpu_seconds,
    free_port,
    wait_http,
)

DATABASE = "gateway_bench_propagation"
KEYS = gateway.KEYS_PATH
MODELS = "/api/providers/openai/v1/models"
WORK = ROOT / ".local" / "bench-propagation"
START_TIMEOUT = 60.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--revocations", type=int, default=100)
    parser.add_argument("--burst-seconds", type=float, default=5.0)
    parser.add_argument("--burst-rate", type=float, default=100.0, help="changes a second")
    return parser.parse_args()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: n={len(ms)} p50={percentile(ms, 0.5):.1f} ms p99={percentile(ms, 0.99):.1f} ms"
        f" max={max(ms):.1f} ms"
    )


async def status(session: aiohttp.ClientSession, proxy: Server, raw: str) -> int:
    headers = {"Authorization": f"Bearer {raw}"}
    async with session.get(proxy.url(MODELS), headers=headers) as response:
        await response.read()
        return response.status


async def new_key(
    session: aiohttp.ClientSession, keymgmt: Server, proxy: Server
) -> tuple[str, str]:
    raw = f"sk-bench-{uuid.uuid4().hex}"
    async with session.put(keymgmt.url(KEYS), json={"name": "bench", "key": raw}) as response:
        assert response.status == 200, await response.text()
        key_id = (await response.json())["keyId"]
    while await status(session, proxy, raw) != 200:
        pass  # each call is the pause: a few ms
    return raw, key_id


async def revocations(keymgmt: Server, proxy: Server, count: int) -> list[float]:
    taken = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            raw, key_id = await new_key(session, keymgmt, proxy)
            url = keymgmt.url(f"{KEYS}/{key_id}")
            async with session.patch(url, json={"revoked": True}) as response:
                assert response.status == 200, await response.text()
                answered = time.perf_counter()
            while await status(session, proxy, raw) != 401:
                pass
            taken.append(time.perf_counter() - answered)
    return taken


async def latencies(proxy: Server, raw: str, seconds: float) -> list[float]:
    taken = []
    async with aiohttp.ClientSession() as session:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            assert await status(session, proxy, raw) == 200
            taken.append(time.perf_counter() - started)
    return taken


# What keymgmt's PATCH writes and announces, in one statement: keymgmt alone, sharing two cores
# with Postgres and the proxy, does not reach 100 PATCHes a second here.
CHANGE = f"""
    WITH changed AS (
        UPDATE keys SET rate_limit_over_time = $2, rate_limit_unit = 'm', updated_at = now()
        WHERE key_id = $1::uuid RETURNING key_id, updated_at)
    SELECT pg_notify('{CHANNEL}', json_build_object('kind', '{KEY}', 'id', key_id,
        'version', extract(epoch FROM updated_at),
        'at', extract(epoch FROM clock_timestamp()))::text)
    FROM changed"""


async def changes(stores: gateway.Stores, key_ids: list[str], seconds: float, rate: float) -> int:
    """Changes of other keys' rate limits, `rate` a second on schedule, each one notified."""
    count = int(seconds * rate)
    pool = await asyncpg.create_pool(
        host=stores.pg_host,
        port=stores.pg_port,
        user=stores.pg_user,
        password=stores.pg_password or None,
        database=DATABASE,
        min_size=4,
        max_size=4,
    )

    async def change(number: int) -> None:
        await pool.fetch(CHANGE, key_ids[number % len(key_ids)], 1000 + number)

    try:
        async with asyncio.TaskGroup() as group:
            started = time.perf_counter()
            for number in range(count):
                await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
                group.create_task(change(number))
    finally:
        await pool.close()
    return count


async def burst(
    stores: gateway.Stores, keymgmt: Server, proxy: Server, args: argparse.Namespace
) -> None:
    async with aiohttp.ClientSession() as session:
        raw, _ = await new_key(session, keymgmt, proxy)
        others = [(await new_key(session, keymgmt, proxy))[1] for _ in range(50)]
    quiet = await latencies(proxy, raw, args.burst_seconds)
    during, made = await asyncio.gather(
        latencies(proxy, raw, args.burst_seconds),
        changes(stores, others, args.burst_seconds, args.burst_rate),
    )
    print(summary("proxy latency, no changes", quiet))
    print(summary(f"proxy latency, {made / args.burst_seconds:.0f} changes/s", during))
    # The proxy's CPU for the changes alone, against the same time with nothing to do.
    idle = cpu_seconds(proxy.pid)
    await asyncio.sleep(args.burst_seconds)
    idle, before = cpu_seconds(proxy.pid) - idle, cpu_seconds(proxy.pid)
    made = await changes(stores, others, args.burst_seconds, args.burst_rate)
    per_change = (cpu_seconds(proxy.pid) - before - idle) / made
    print(f"proxy CPU per change: {per_change * 1e6:.0f} us")


def start(processes: Processes, stores: gateway.Stores, redis_db: int) -> tuple[Server, Server]:
    env = {"POSTGRESQL_DB_NAME": DATABASE, "REDIS_DB": str(redis_db)}
    port = free_port()
    upstream = processes.start(
        "upstream", [PYTHON, "-m", "tests.bench.upstream", "--port", str(port)], port
    )
    keymgmt_port, proxy_port = free_port(), free_port()
    keymgmt = processes.start(
        "keymgmt",
        [PYTHON, "-m", "keymgmt"],
        keymgmt_port,
        gateway.service_env(stores, KEYMGMT_HOST=HOST, KEYMGMT_PORT=str(keymgmt_port), **env),
    )
    wait_http(keymgmt, "/api/health", START_TIMEOUT)  # migrated: the proxy can load
    proxy = processes.start(
        "proxy",
        [PYTHON, "-m", "proxy"],
        proxy_port,
        gateway.service_env(
            stores,
            OPENAI_BASE_URL=upstream.url("/v1"),
            PROXY_HOST=HOST,
            PROXY_PORT=str(proxy_port),
            IN_MEMORY_DB_UPDATE_INTERVAL="60s",
            LOG_LEVEL="warning",
            **env,
        ),
    )
    wait_http(upstream, "/v1/models", START_TIMEOUT)
    wait_http(proxy, "/api/health", START_TIMEOUT)
    return keymgmt, proxy


def main() -> None:
    args = parse_args()
    redis_db = int(os.environ.get("TEST_REDIS_DB", gateway.REDIS_DB))
    with gateway.stores(WORK / "stores") as stores, Processes(Path(WORK / "logs")) as processes:
        asyncio.run(gateway.drop_database(stores, DATABASE, create_again=True))
        gateway.flush_redis(stores, redis_db)
        try:
            keymgmt, proxy = start(processes, stores, redis_db)
            taken = asyncio.run(revocations(keymgmt, proxy, args.revocations))
            print(summary("keymgmt 200 to the proxy's first 401", taken))
            if args.burst_seconds > 0:
                asyncio.run(burst(stores, keymgmt, proxy, args))
        finally:
            processes.stop_all()
            with contextlib.suppress(Exception):
                asyncio.run(gateway.drop_database(stores, DATABASE))
            gateway.flush_redis(stores, redis_db)


if __name__ == "__main__":
    main()
