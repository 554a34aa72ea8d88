"""The load generator, run in a process of its own; prints one JSON object of results.

    python -m tests.bench.loadgen latency URL --body JSON [--header 'Name: value' ...]
    python -m tests.bench.loadgen ttfb URL ...        (streamed: time to the first body bytes;
                                                      --stream-end says what ends the stream)
    python -m tests.bench.loadgen throughput URL ... --concurrency 50 --duration 10

Latency and time to first byte are measured one request at a time after a warm-up; throughput
is what `--concurrency` closed-loop clients complete in `--duration` seconds (the fallback when
wrk is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from shared.runtime import install_uvloop
from tests.bench.procs import ROOT

# One request's outcome: its time in seconds (to the end, or to the first body bytes), or why
# it failed.
Probe = Callable[[aiohttp.ClientSession], Awaitable[float | str]]
OPENAI_STREAM_END = b"[DONE]"


@dataclass(frozen=True)
class Target:
    """What every request of a run is: a POST of a JSON body, with these headers; a streamed
    answer is complete once `stream_end` has come."""

    url: str
    headers: dict[str, str]
    body: bytes
    stream_end: bytes = OPENAI_STREAM_END

    @classmethod
    def json(
        cls,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        stream_end: bytes = OPENAI_STREAM_END,
    ) -> Target:
        json_headers = {"Content-Type": "application/json", **headers}
        return cls(url, json_headers, orjson.dumps(body), stream_end)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_ms(seconds: list[float], failures: Counter[str]) -> dict[str, Any]:
    values = sorted(s * 1000 for s in seconds)
    summary: dict[str, Any] = {"n": len(values), "errors": failures.total()}
    if failures:
        summary["failures"] = dict(failures.most_common(3))
    if values:
        summary |= {
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": values[-1],
            "mean": sum(values) / len(values),
        }
    return summary


def full_response(target: Target) -> Probe:
    async def probe(session: aiohttp.ClientSession) -> float | str:
        started = time.perf_counter()
        async with session.post(target.url, data=target.body, headers=target.headers) as response:
            body = await response.read()
            elapsed = time.perf_counter() - started
            return elapsed if response.status == 200 else failure(response.status, body)

    return probe


def first_byte(target: Target) -> Probe:
    async def probe(session: aiohttp.ClientSession) -> float | str:
        started = time.perf_counter()
        async with session.post(target.url, data=target.body, headers=target.headers) as response:
            first = await response.content.readany()
            elapsed = time.perf_counter() - started
            rest = await response.read()
            if response.status != 200:
                return failure(response.status, first + rest)
            # A complete event stream, or it does not count.
            return elapsed if target.stream_end in first + rest else "incomplete event stream"

    return probe


def failure(status: int, body: bytes) -> str:
    return f"HTTP {status}: {body[:120].decode(errors='replace')}"


async def attempt(probe: Probe, session: aiohttp.ClientSession) -> float | str:
    try:
        return await probe(session)
    except (aiohttp.ClientError, TimeoutError) as error:
        return type(error).__name__


async def sequential(probe: Probe, requests: int, warmup: int) -> dict[str, Any]:
    times: list[float] = []
    failures: Counter[str] = Counter()
    async with new_session(1) as session:
        for i in range(warmup + requests):
            outcome = await attempt(probe, session)
            if i < warmup:
                continue
            if isinstance(outcome, str):
                failures[outcome] += 1
            else:
                times.append(outcome)
    return summary_ms(times, failures)


async def closed_loop(probe: Probe, concurrency: int, duration: float) -> dict[str, Any]:
    done = 0
    failures: Counter[str] = Counter()

    async def client(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            outcome = await attempt(probe, session)
            if isinstance(outcome, str):
                failures[outcome] += 1
            else:
                done += 1

    async with new_session(concurrency) as session:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(client(session, deadline) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": done / elapsed,
        "requests": done,
        "errors": failures.total(),
        "failures": dict(failures.most_common(3)),
        "tool": "aiohttp",
    }


def new_session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


def command(mode: str, target: Target, **options: float) -> list[str]:
    """The argv that runs this generator in a process of its own."""
    argv = [sys.executable, "-m", "tests.bench.loadgen", mode, target.url]
    argv += ["--body", target.body.decode()]
    for name, header in target.headers.items():
        argv += ["--header", f"{name}: {header}"]
    argv += ["--stream-end", target.stream_end.decode()]
    for option, number in options.items():
        argv += [f"--{option}", str(number)]
    return argv


def spawn(mode: str, target: Target, **options: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(mode, target, **options), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def results_of(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return orjson.loads(out)  # type: ignore[no-any-return]


def measure(mode: str, target: Target, timeout: float = 300.0, **options: float) -> dict[str, Any]:
    """Runs the generator in its own process and returns its results."""
    proc = spawn(mode, target, **options)
    try:
        return results_of(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("latency", "ttfb", "throughput"))
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument(
        "--stream-end",
        default=OPENAI_STREAM_END.decode(),
        help="what ends a complete event stream (ttfb)",
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = dict(h.split(": ", 1) for h in args.header)
    target = Target(args.url, headers, args.body.encode(), args.stream_end.encode())
    if args.mode == "latency":
        return await sequential(full_response(target), args.requests, args.warmup)
    if args.mode == "ttfb":
        return await sequential(first_byte(target), args.requests, args.warmup)
    return await closed_loop(full_response(target), args.concurrency, args.duration)


def main() -> None:
    args = parse_args(sys.argv[1:])
    install_uvloop()
    sys.stdout.write(orjson.dumps(asyncio.run(run(args))).decode() + "\n")


if __name__ == "__main__":
    main()
