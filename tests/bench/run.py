"""The gateway benchmark: `make bench`, or `.venv/bin/python -m tests.bench.run [options]`.

Legs, each server in its own process and the load generator in another: (a) straight to the
fake upstream, (b) a bare aiohttp pass-through, (c) the proxy with a rate- and cost-limited key,
(c2) the proxy with PROXY_WORKERS=2, (c3) the proxy with its log line, metrics and usage events
switched off, to tell what they cost, (c4) a one-step route, (c5) a key of two rate windows
whose calls name its user, (c6) the proxy on a Redis Cluster of three masters with a replica
each, started by the bench, (d) LiteLLM's proxy, (e) the Anthropic Messages API through the
proxy's anthropic path, against the same fake upstream direct; with --baseline-tree, the proxy
of another checkout beside this one's. Every server is started first, then in each round
each measurement runs on every leg in turn. Then the key snapshot at scale. Prints a Markdown
report (also written to .local/bench/report.md, with results.json beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from types import FrameType
from typing import Any

import aiohttp
import orjson
import redis

from tests.bench import gateway, loadgen, pyspy, report, scale, stages, wrk
from tests.bench.legs import REFERENCES, START_TIMEOUT, TITLES, Leg, Starters
from tests.bench.loadgen import Target
from tests.bench.procs import (
    PYTHON,
    ROOT,
    Processes,
    Unavailable,
    cpu_list,
    cpu_seconds,
    cpu_text,
    free_port,
    rss_mb,
    wait_http,
)

WORK = ROOT / ".local" / "bench"
FILLER_KEYS = 1000 - gateway.BENCH_KEYS  # with the bench keys: the 1k keys of the RSS target
BUSY_LOAD = 1.0  # other work on the two cores: the legs compete with it
BUSY_WARNING = " (the machine was busy: expect the figures to be off)"
PROFILE_SECONDS = 15.0  # enough samples for the top functions to hold still from run to run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="sequential, per leg")
    parser.add_argument("--stream-requests", type=int, default=500, help="streamed, per leg")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0, help="one throughput run, s")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every measurement on every leg"
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=[100_000],
        help="key counts for the snapshot runs, e.g. --scale 100000 1000000; none to skip",
    )
    parser.add_argument(
        "--legs",
        nargs="+",
        choices=CHOSEN_LEGS,
        default=CHOSEN_LEGS,
        help="legs to run (anthropic brings anthropic_direct, its reference)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout (e.g. a `git worktree add` of an older commit): its proxy runs "
        "as the leg `baseline`, taking turns with this tree's proxy",
    )
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="throughput client: wrk when installed (auto), else the aiohttp one",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the pass-through and the proxy under load with py-spy",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the server under test on --pin-server's CPUs and every other process the "
        "bench starts on the rest (taskset)",
    )
    parser.add_argument(
        "--pin-server",
        type=cpu_list,
        metavar="CPUS",
        help="with --pin, the server's CPUs as taskset takes them, e.g. 1-2 (default 1)",
    )
    args = parser.parse_args()
    if args.pin_server is not None and not args.pin:
        parser.error("--pin-server goes with --pin")
    if args.pin:
        check_pinning(parser, args)
    if args.baseline_tree is not None and not (args.baseline_tree / "proxy").is_dir():
        parser.error(f"--baseline-tree {args.baseline_tree}: no proxy/ in it")
    return args


CHOSEN_LEGS = [name for name in TITLES if name != "baseline"]


def check_pinning(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Gives --pin-server its default; stops in one line where the pinning cannot be done."""
    args.pin_server = args.pin_server or frozenset({1})
    available = frozenset(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        parser.exit(2, "bench: --pin needs taskset (util-linux), which is not installed\n")
    if not args.pin_server < available:
        cpus = cpu_text(available)
        parser.exit(2, f"bench: --pin-server must name some, not all, of CPUs {cpus}\n")


def bench_cpus(server_cpus: frozenset[int]) -> frozenset[int]:
    """Where every process the bench starts runs, but the servers under test."""
    return frozenset(os.sched_getaffinity(0)) - server_cpus


def leg_names(args: argparse.Namespace) -> list[str]:
    """The legs asked for, the baseline and the references they are measured against, in the
    order of TITLES (the baseline right after this tree's proxy)."""
    names = set(args.legs) | ({"baseline"} if args.baseline_tree else set())
    names |= {reference for name in names for reference in REFERENCES.get(name, ())}
    return [name for name in TITLES if name in names]


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def check(target: Target) -> None:
    """One request must succeed before a leg is measured, or its figures mean nothing."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(target.url, data=target.body, headers=target.headers) as response,
    ):
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")


def throughput(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    use_wrk = args.load_generator == "wrk" or (args.load_generator == "auto" and wrk.WRK)
    if use_wrk:
        return wrk.throughput(target, args.concurrency, args.duration)
    return loadgen.measure(
        "throughput", target, concurrency=args.concurrency, duration=args.duration
    )


LEG_ERRORS = (
    RuntimeError,
    OSError,
    subprocess.SubprocessError,
    aiohttp.ClientError,
    redis.RedisError,  # the cluster leg's, while it starts its cluster
)


def start_legs(starters: Starters, results: report.Results, names: list[str]) -> dict[str, Leg]:
    """Starts every leg's server up front, so that their measurements can take turns."""
    legs: dict[str, Leg] = {}
    for name in names:
        progress(f"{TITLES[name]}: starting")
        try:
            leg = starters.by_name()[name]()
        except Unavailable as error:
            drop(results, name, f"skipped: {error}")
            continue
        except LEG_ERRORS as error:
            drop(results, name, f"failed: {error}")
            continue
        legs[name] = leg
        results.legs[name] = report.LegResult(TITLES[name])
    return legs


def drop(results: report.Results, name: str, note: str) -> None:
    progress(f"{TITLES[name]}: {note}")
    results.legs[name] = report.LegResult(TITLES[name], note=note.splitlines()[0])


Step = Callable[[str, Leg], None]


def each_leg(
    legs: dict[str, Leg], results: report.Results, step: Step, reverse: bool = False
) -> None:
    """Runs one measuring step on every leg still standing; a leg that fails drops out."""
    names = list(reversed(legs)) if reverse else list(legs)
    for name in names:
        leg = legs[name]
        try:
            step(name, leg)
        except LEG_ERRORS as error:
            drop(results, name, f"failed: {error}")
            del legs[name]


def measure(legs: dict[str, Leg], results: report.Results, args: argparse.Namespace) -> None:
    """Rounds of each step on every leg in turn, so that a busy moment of the machine hits no
    leg alone; of each figure, the median of the rounds counts."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in legs}

    def latency(name: str, leg: Leg) -> None:
        asyncio.run(check(leg.chat))
        figures = loadgen.measure("latency", leg.chat, requests=args.requests, warmup=200)
        results.legs[name].round_latency.append(figures)

    def ttfb(name: str, leg: Leg) -> None:
        figures = loadgen.measure("ttfb", leg.stream, requests=args.stream_requests, warmup=50)
        results.legs[name].round_ttfb.append(figures)

    def load(name: str, leg: Leg) -> None:
        before = cpu_seconds(leg.server.pid)
        run = throughput(leg.chat, args)
        cpu = cpu_seconds(leg.server.pid) - before
        runs[name].append({**run, "cpu_us_per_request": cpu * 1e6 / max(1, run["requests"])})

    def summarise(name: str, leg: Leg) -> None:
        result = results.legs[name]
        result.latency = report.combined(result.round_latency)
        result.ttfb = report.combined(result.round_ttfb)
        result.throughput = median_run(runs[name])
        result.round_rps = [run["rps"] for run in runs[name]]
        result.round_cpu_us = [run["cpu_us_per_request"] for run in runs[name]]
        result.cpu_us_per_request = median(result.round_cpu_us)
        result.rss_mb = rss_mb(leg.server.pid)

    for number in range(1, args.rounds + 1):
        progress(
            f"round {number}/{args.rounds}: {args.requests} sequential and "
            f"{args.stream_requests} streamed requests, {args.duration:.0f}s of load, per leg"
        )
        # Every other round backwards, so that no leg always runs right after another.
        backwards = number % 2 == 0
        each_leg(legs, results, latency, backwards)
        each_leg(legs, results, ttfb, backwards)
        each_leg(legs, results, load, backwards)
    each_leg(legs, results, summarise)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput, with the failures of every run."""
    middle = sorted(runs, key=lambda run: float(run["rps"]))[len(runs) // 2]
    return {**middle, "errors": sum(int(run["errors"]) for run in runs), "rounds": len(runs)}


def profile(name: str, leg: Leg, args: argparse.Namespace, results: report.Results) -> str:
    """Samples the leg's server during one more throughput run (not a measured one), and gives
    its samples to the stages of the request path."""
    if pyspy.py_spy() is None:
        return "not profiled: py-spy is not installed (`.venv/bin/pip install py-spy`)"
    progress(f"{name}: profiling {PROFILE_SECONDS:.0f}s under load with py-spy")
    raw = WORK / f"{name}-profile.txt"
    raw.unlink(missing_ok=True)  # a previous run's must not pass for this one's
    recorder = pyspy.record(leg.server.pid, PROFILE_SECONDS, raw)
    try:
        throughput(leg.chat, argparse.Namespace(**{**vars(args), "duration": PROFILE_SECONDS}))
        _, error = recorder.communicate(timeout=PROFILE_SECONDS + 60)
    except LEG_ERRORS as failure:
        return f"not profiled: {failure}"
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if recorder.returncode != 0 or not raw.exists():
        return f"not profiled: py-spy failed: {error.decode(errors='replace')[-300:]}"
    results.stages[name] = dict(stages.classify(raw))
    summary = pyspy.markdown(pyspy.summarise(raw))
    return f"Collapsed stacks: `{raw.relative_to(ROOT)}`. {summary}"


PROFILED = ("passthrough", "passthrough_gc", "proxy", "baseline", "cluster")


def bench(
    args: argparse.Namespace,
    processes: Processes,
    stores: gateway.Stores,
    deployments: contextlib.ExitStack,
) -> report.Results:
    progress("database: recreating gateway_bench with 1k keys, the bench keys made by keymgmt")
    asyncio.run(gateway.drop_database(stores, create_again=True))
    gateway.migrate(stores)
    asyncio.run(gateway.insert_keys(stores, 0, FILLER_KEYS))
    gateway.flush_redis(stores)
    port = free_port()
    upstream = processes.start(
        "upstream", [PYTHON, "-m", "tests.bench.upstream", "--port", str(port)], port
    )
    wait_http(upstream, "/v1/models", START_TIMEOUT)
    keys = gateway.create_bench_keys(processes, stores, upstream)
    starters = Starters(processes, stores, upstream, keys, WORK, deployments, args.baseline_tree)

    results = report.Results()
    legs = start_legs(starters, results, leg_names(args))
    measure(legs, results, args)
    if args.profile:
        for name in PROFILED:
            if name in legs:
                results.profiles[TITLES[name]] = profile(name, legs[name], args, results)
    for leg in legs.values():
        if not leg.shared:
            processes.stop(leg.server)
    for keys in sorted(args.scale):
        progress(f"snapshot at scale: {keys:,} keys")
        results.scales.append(scale_run(keys, starters, args))
    return results


def scale_run(keys: int, starters: Starters, args: argparse.Namespace) -> scale.ScaleResult:
    scale.top_up(starters.stores, keys)
    return scale.measure(starters, keys, args.requests)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"Machine: {len(os.sched_getaffinity(0))} cores, {cpu}, {memory_kb / 1024**2:.1f} GiB; "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"load generator: {'wrk' if wrk.WRK else 'aiohttp'}"
    )


def revision(tree: Path = ROOT) -> str:
    """The commit measured, and whether the service code differs from it."""

    def git(*argv: str) -> str:
        # No optional locks: reading the state must not rewrite the index.
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        found = subprocess.run(["git", *argv], cwd=tree, env=env, capture_output=True, text=True)
        return found.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "proxy", "shared")
    return head + (" + uncommitted changes" if dirty else "")


def header(args: argparse.Namespace, load_before: float) -> str:
    # Anything else running on the two cores moves every figure: the load average says so.
    baseline = (
        f"\nBaseline: the proxy of `{args.baseline_tree}`, commit {revision(args.baseline_tree)}."
        if args.baseline_tree
        else ""
    )
    pinned = (
        f"\nPinned: the server under test on CPU {cpu_text(args.pin_server)}, every other "
        f"process the bench starts on CPU {cpu_text(bench_cpus(args.pin_server))}; "
        "Redis and Postgres that the bench did not start are not pinned."
        if args.pin
        else ""
    )
    return (
        f"## Benchmark, {time.strftime('%Y-%m-%d %H:%M')}, commit {revision()}\n\n{machine()}; "
        f"1-minute load average before the run: {load_before:.2f}"
        f"{BUSY_WARNING if load_before > BUSY_LOAD else ''}.\n"
        f"{args.rounds} rounds, the legs taking turns in each: {args.requests} sequential "
        f"non-streamed calls (after 200 warm-up), {args.stream_requests} streamed, and "
        f"{args.duration:.0f}s of throughput at concurrency {args.concurrency}; every figure is "
        f"the median of the rounds.{baseline}{pinned}"
    )


def stop_on_signals() -> None:
    # SIGTERM unwinds like Ctrl-C, so that every server started is stopped; SIGINT too when a
    # shell started us in the background with it ignored.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def run(args: argparse.Namespace) -> report.Results:
    with gateway.stores(WORK / "stores") as stores:
        try:
            # Left in reverse: every server stops before the cluster it may be using.
            with (
                contextlib.ExitStack() as deployments,
                Processes(WORK / "logs", args.pin_server or frozenset()) as processes,
            ):
                return bench(args, processes, stores, deployments)
        finally:
            asyncio.run(gateway.drop_database(stores))
            gateway.flush_redis(stores)


def main() -> None:
    args = parse_args()
    stop_on_signals()
    WORK.mkdir(parents=True, exist_ok=True)
    title = header(args, os.getloadavg()[0])  # the machine's cores as seen before pinning
    if args.pin:
        # This process and all it starts leave the server's CPUs; taskset puts the servers
        # under test on them.
        os.sched_setaffinity(0, bench_cpus(args.pin_server))
    try:
        results = run(args)
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; every server it started is stopped")
    text = report.markdown(results, title)
    (WORK / "report.md").write_text(text)
    (WORK / "results.json").write_bytes(
        orjson.dumps(dataclasses.asdict(results), option=orjson.OPT_INDENT_2)
    )
    print(text)


if __name__ == "__main__":
    main()
