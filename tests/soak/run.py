"""A bounded soak of the whole gateway: `make soak`, or `python -m tests.soak.run [--seconds N]`.

keymgmt, two proxy replicas and the fake upstream run as processes of their own on 127.0.0.1,
on the configured Postgres and Redis when they answer, else on throw-away ones. Steady load at
moderate concurrency goes to a few keys with rate and cost limits, alternating replicas and
streamed and unstreamed chats. At the end it checks, and prints:

- spend: each key's recorded spend equals the sum over its successful answers of the usage
  they reported times the price (within 1e-9 USD a call);
- limits: no interval of one rate window holds more admissions than the limit, lifetime spend
  stays within its limit plus one call, no interval of one cost window holds more spend than
  its limit plus one call;
- memory: each proxy's RSS, sampled every 10 s, grows by at most 20% after the warm-up; Redis
  `used_memory` (the whole server's) and the soak database's key count, at start and end.

Exits 1 if a check fails. Every process it started is stopped at the end, however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
import services  # noqa: E402  (deploy/local is not a package)

from tests.bench.gateway import Stores, drop_database, flush_redis, stores  # noqa: E402
from tests.bench.procs import HOST, PYTHON, Processes, Server, rss_mb, wait_http  # noqa: E402

LOG_DIR = ROOT / ".local" / "soak"
REDIS_DB = 15  # the tests use 13 and the benchmark 14; 0 belongs to whoever else runs here
KEYS_PATH = "/api/key-management/keys"
PROXY_PREFIX = "/api/providers/openai/v1"
START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 5.0
RSS_INTERVAL = 10.0
RSS_GROWTH = 0.20
NANO = 1_000_000_000

# Prices in whole nano-USD per token, so that every call's cost is exact.
MODEL = "soak-model"
INPUT_NANO, CACHED_NANO, OUTPUT_NANO = 1000, 500, 2000
MAX_TOKENS = 5  # the fake upstream answers 5 words, one token each
WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "away", "home")
WINDOW_MARGIN = 1.0  # seconds: spend may show up to a second after the answer ends
UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class KeySpec:
    name: str
    limits: dict[str, Any]

    @property
    def rate(self) -> tuple[int, float] | None:
        if "rateLimitOverTime" not in self.limits:
            return None
        return self.limits["rateLimitOverTime"], UNIT_SECONDS[self.limits["rateLimitUnit"]]

    @property
    def window_budget(self) -> tuple[float, float] | None:
        if "costLimitInUsdOverTime" not in self.limits:
            return None
        unit = UNIT_SECONDS[self.limits["costLimitInUsdUnit"]]
        return self.limits["costLimitInUsdOverTime"], unit


# A call costs about 20 tokens: 15 prompt (3 to 14 words) at 1000, 5 completion at 2000 nano.
KEYS = (
    KeySpec("rate-per-second", {"rateLimitOverTime": 10, "rateLimitUnit": "s"}),
    KeySpec("rate-per-minute", {"rateLimitOverTime": 300, "rateLimitUnit": "m"}),
    KeySpec("lifetime-budget", {"costLimitInUsd": 0.03}),
    KeySpec(
        "window-budget",
        {
            "costLimitInUsdOverTime": 0.01,
            "costLimitInUsdUnit": "m",
            "rateLimitOverTime": 100,
            "rateLimitUnit": "s",
        },
    ),
    KeySpec("unlimited", {}),  # created last: once the proxies know it, they know all
)


@dataclass
class Outcome:
    key: str
    replica: int
    stream: bool
    status: int
    sent: float
    done: float
    cost_nano: int = 0
    detail: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=500_000, help="stop after this many")
    parser.add_argument("--latency", type=float, default=0.02, help="fake upstream latency, s")
    args = parser.parse_args()
    if args.seconds <= 0 or args.concurrency <= 0 or args.max_requests <= 0:
        parser.error("--seconds, --concurrency and --max-requests must be positive")
    return args


def progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Postgres and Redis ----------------------------------------------------------------------


# --- the gateway's processes -----------------------------------------------------------------


def service_env(stores: Stores, database: str, upstream_port: int, pricing: Path) -> dict[str, str]:
    return {
        **os.environ,
        "POSTGRESQL_HOSTS": stores.pg_host,
        "POSTGRESQL_PORT": str(stores.pg_port),
        "POSTGRESQL_USERNAME": stores.pg_user,
        "POSTGRESQL_PASSWORD": stores.pg_password,
        "POSTGRESQL_DB_NAME": database,
        "REDIS_HOSTS": stores.redis_host,
        "REDIS_PORT": str(stores.redis_port),
        "REDIS_PASSWORD": stores.redis_password,
        "REDIS_DB": str(REDIS_DB),
        "OPENAI_API_KEY": "sk-soak-upstream",
        "OPENAI_BASE_URL": f"http://{HOST}:{upstream_port}/v1",
        "IN_MEMORY_DB_UPDATE_INTERVAL": "1s",
        "PRICING_FILE": str(pricing),
        "PROXY_WORKERS": "1",  # one process a replica, whose RSS is sampled
        "LOG_LEVEL": "warning",
        "ADMIN_PASS": "",
        "KEYMGMT_HOST": HOST,
        "PROXY_HOST": HOST,
    }


def write_pricing(directory: Path) -> Path:
    path = directory / "prices.json"
    prices = {
        MODEL: {
            "input_cost_per_token": INPUT_NANO / NANO,
            "output_cost_per_token": OUTPUT_NANO / NANO,
            "cache_read_input_token_cost": CACHED_NANO / NANO,
        }
    }
    path.write_bytes(orjson.dumps(prices))
    return path


def start_gateway(
    processes: Processes, stores: Stores, database: str, pricing: Path, latency: float
) -> tuple[Server, list[Server]]:
    """The fake upstream, keymgmt, and two proxies; returns keymgmt and the proxies, all up."""
    upstream_port = services.free_port()
    upstream = processes.start(
        "upstream",
        [
            *(PYTHON, "-m", "proxy.fakeupstream", "--host", HOST, "--port", str(upstream_port)),
            *("--latency", str(latency), "--stream-interval", str(latency / 5)),
        ],
        upstream_port,
        os.environ,
    )
    env = service_env(stores, database, upstream_port, pricing)
    port = services.free_port()
    keymgmt = processes.start(
        "keymgmt", [PYTHON, "-m", "keymgmt"], port, {**env, "KEYMGMT_PORT": str(port)}
    )
    wait_http(upstream, "/v1/models", START_TIMEOUT)
    wait_http(keymgmt, "/api/health", START_TIMEOUT)  # also means the schema is migrated
    proxies = []
    for replica in range(2):
        port = services.free_port()
        proxies.append(
            processes.start(
                f"proxy-{replica}", [PYTHON, "-m", "proxy"], port, {**env, "PROXY_PORT": str(port)}
            )
        )
    for proxy in proxies:
        wait_http(proxy, "/api/health", START_TIMEOUT)
    return keymgmt, proxies


# --- keys and load ---------------------------------------------------------------------------


async def create_keys(
    session: aiohttp.ClientSession, keymgmt: Server
) -> dict[str, tuple[str, str]]:
    """Key name -> (raw key, key id)."""
    created = {}
    for spec in KEYS:
        raw = f"sk-soak-{uuid.uuid4().hex}"
        body = {"name": spec.name, "key": raw, "tags": ["soak"], **spec.limits}
        async with session.put(keymgmt.url(KEYS_PATH), json=body) as response:
            if response.status != 200:
                raise RuntimeError(
                    f"creating {spec.name}: {response.status} {await response.text()}"
                )
            created[spec.name] = (raw, (await response.json())["keyId"])
    return created


async def wait_for_key(session: aiohttp.ClientSession, proxies: list[Server], raw: str) -> None:
    """Until every replica's snapshot has the key (the unlimited one: probing costs nothing)."""
    deadline = time.monotonic() + START_TIMEOUT
    headers = {"Authorization": f"Bearer {raw}"}
    for proxy in proxies:
        while True:
            url = proxy.url(f"{PROXY_PREFIX}/models")
            async with session.get(url, headers=headers) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proxy.name} never accepted the new keys")
            await asyncio.sleep(0.2)


def chat_body(n: int, stream: bool) -> dict[str, Any]:
    words = [WORDS[(n + i) % len(WORDS)] for i in range(3 + n % 12)]
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": " ".join(words)}],
        "max_tokens": MAX_TOKENS,
    }
    if n % 3 == 0:
        body["user"] = "cached"  # the fake reports half the prompt as cached
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def cost_nano(usage: Mapping[str, Any]) -> int:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (prompt - cached) * INPUT_NANO + cached * CACHED_NANO + completion * OUTPUT_NANO


async def read_answer(response: aiohttp.ClientResponse, stream: bool) -> int:
    """The cost of a successful answer, from the usage it reports."""
    if not stream:
        return cost_nano((await response.json())["usage"])
    usage = None
    async for line in response.content:
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            usage = event.get("usage") or usage
    if usage is None:
        raise ValueError("a stream that asked for usage got none")
    return cost_nano(usage)


async def send(
    session: aiohttp.ClientSession, urls: list[str], raw_key: str, name: str, turn: int
) -> Outcome:
    """The key's `turn`-th request: replicas alternate every two, streaming every other."""
    replica, stream = (turn // 2) % len(urls), turn % 2 == 1
    outcome = Outcome(name, replica, stream, 0, time.monotonic(), 0.0)
    headers = {"Authorization": f"Bearer {raw_key}"}
    body = chat_body(turn, stream)
    try:
        async with session.post(urls[replica], json=body, headers=headers) as response:
            outcome.status = response.status
            if response.status == 200:
                outcome.cost_nano = await read_answer(response, stream)
            else:
                error = (await response.json())["error"]
                outcome.detail = str(error.get("code"))
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
        outcome.detail = f"{type(error).__name__}: {error}"
    outcome.done = time.monotonic()
    return outcome


async def load(
    session: aiohttp.ClientSession,
    proxies: list[Server],
    keys: dict[str, tuple[str, str]],
    args: argparse.Namespace,
) -> list[Outcome]:
    """`concurrency` workers, each sending one request after the other, until time is up."""
    outcomes: list[Outcome] = []
    numbers = itertools.count()
    names = [spec.name for spec in KEYS]
    urls = [proxy.url(f"{PROXY_PREFIX}/chat/completions") for proxy in proxies]
    deadline = time.monotonic() + args.seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            n = next(numbers)
            if n >= args.max_requests:
                return
            name = names[n % len(names)]  # every key in turn, each at the same pace
            outcomes.append(await send(session, urls, keys[name][0], name, n // len(names)))

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return outcomes


def redis_memory(found: Stores) -> str:
    client = found.redis_client(REDIS_DB)
    try:
        used = client.info("memory")["used_memory"]
        keys = client.dbsize()
    finally:
        client.close()
    return f"used_memory {used / 2**20:.1f} MB, {keys} keys in db {REDIS_DB}"


async def sample_rss(
    proxies: list[Server], series: dict[str, list[float]], done: asyncio.Event
) -> None:
    while True:
        for proxy in proxies:
            series[proxy.name].append(rss_mb(proxy.proc.pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), RSS_INTERVAL)
            return


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {message}")
        if not ok:
            self.failures.append(message)


async def recorded_spend(
    session: aiohttp.ClientSession, keymgmt: Server, key_id: str, expected: float
) -> dict[str, Any]:
    """The key's spend report once it shows `expected`, or as it is after SETTLE_TIMEOUT."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        async with session.get(keymgmt.url(f"/api/reporting/keys/{key_id}")) as response:
            report: dict[str, Any] = await response.json()
        if abs(report["costInUsd"] - expected) < 1e-12 or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.2)


def rate_violations(admitted: list[Outcome], limit: int, window: float) -> int:
    """Groups of limit+1 admissions that certainly fell within less than one window."""
    spans = sorted((o.sent, o.done) for o in admitted)
    return sum(
        1
        for i in range(len(spans) - limit)
        if max(done for _, done in spans[i : i + limit + 1]) - spans[i][0] < window
    )


def busiest_window_nano(admitted: list[Outcome], window: float) -> int:
    """Most spend among answers that ended within one window less the settlement margin."""
    ends = sorted((o.done, o.cost_nano) for o in admitted)
    best = total = start = 0
    for end, cost in ends:
        total += cost
        while end - ends[start][0] >= window - WINDOW_MARGIN:
            total -= ends[start][1]
            start += 1
        best = max(best, total)
    return best


def check_key(
    report: Report, spec: KeySpec, outcomes: list[Outcome], spend: dict[str, Any]
) -> None:
    admitted = [o for o in outcomes if o.status == 200]
    expected_nano = sum(o.cost_nano for o in admitted)
    statuses = Counter(str(o.status) if o.status != 429 else f"429 {o.detail}" for o in outcomes)
    paths = Counter(
        f"proxy-{o.replica} {'streamed' if o.stream else 'unstreamed'}" for o in admitted
    )
    print(f"{spec.name}: {len(outcomes)} requests {dict(statuses)}; 200s by path {dict(paths)}")
    recorded = spend["costInUsd"]
    report.check(
        abs(recorded - expected_nano / NANO) <= 1e-9 * max(1, len(admitted)),
        f"{spec.name}: recorded spend {recorded:.9f} USD = usage x price {expected_nano / NANO:.9f}"
        f" over {len(admitted)} answers",
    )
    unexpected = [o for o in outcomes if o.status not in (200, 429)]
    report.check(
        not unexpected,
        f"{spec.name}: only 200 and 429 answers"
        + (f" (first other: {unexpected[0].status} {unexpected[0].detail})" if unexpected else ""),
    )
    if spec.rate:
        limit, window = spec.rate
        violations = rate_violations(admitted, limit, window)
        report.check(
            violations == 0,
            f"{spec.name}: no {limit + 1} admissions within {window:g}s ({violations} found)",
        )
    # The last call admitted need not fit: a budget may end past its limit by one call's cost.
    overshoot = max((o.cost_nano for o in admitted), default=0) / NANO + 1e-12
    if "costLimitInUsd" in spec.limits:
        limit_usd = spec.limits["costLimitInUsd"]
        report.check(
            recorded <= limit_usd + overshoot,
            f"{spec.name}: spend {recorded:.6f} <= {limit_usd} + one call",
        )
    if spec.window_budget:
        limit_usd, window = spec.window_budget
        busiest = busiest_window_nano(admitted, window) / NANO
        report.check(
            busiest <= limit_usd + overshoot
            and spend["costInUsdOverTime"] <= limit_usd + overshoot,
            f"{spec.name}: spend within any {window:g}s {busiest:.6f}, in the current window"
            f" {spend['costInUsdOverTime']:.6f} <= {limit_usd} + one call",
        )


def check_rss(report: Report, series: dict[str, list[float]], seconds: float) -> None:
    # Warm-up: a third of the run, at least one interval and at most 30 s; the baseline is the
    # first sample after it (the first of all is taken before any load).
    warm_samples = max(1, int(min(30.0, seconds / 3) // RSS_INTERVAL))
    for name, samples in series.items():
        print(f"{name} RSS MB every {RSS_INTERVAL:g}s: " + " ".join(f"{s:.1f}" for s in samples))
        after = samples[warm_samples:]
        if len(after) < 2:
            report.check(True, f"{name}: too short a run to judge memory growth")
            continue
        growth = max(after) / after[0] - 1
        report.check(
            growth <= RSS_GROWTH,
            f"{name}: RSS growth after warm-up {growth:+.1%} (limit {RSS_GROWTH:.0%})",
        )


# --- the run ---------------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace,
    keymgmt: Server,
    proxies: list[Server],
    found: Stores,
    report: Report,
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        keys = await create_keys(session, keymgmt)
        await wait_for_key(session, proxies, keys[KEYS[-1].name][0])
        progress(f"load: {args.seconds:g}s at concurrency {args.concurrency}")
        series: dict[str, list[float]] = defaultdict(list)
        stop_sampling = asyncio.Event()
        redis_at_start = redis_memory(found)
        sampler = asyncio.create_task(sample_rss(proxies, series, stop_sampling))
        started = time.monotonic()
        outcomes = await load(session, proxies, keys, args)
        elapsed = time.monotonic() - started
        stop_sampling.set()
        await sampler
        print(f"\n{len(outcomes)} requests in {elapsed:.1f}s ({len(outcomes) / elapsed:.0f}/s)")
        by_key: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in outcomes:
            by_key[outcome.key].append(outcome)
        for spec in KEYS:
            admitted = sum(o.cost_nano for o in by_key[spec.name] if o.status == 200)
            spend = await recorded_spend(session, keymgmt, keys[spec.name][1], admitted / NANO)
            check_key(report, spec, by_key[spec.name], spend)
        check_rss(report, series, args.seconds)
        print(f"Redis at start: {redis_at_start}; at end: {redis_memory(found)}")
        for proxy in proxies:
            report.check(proxy.proc.poll() is None, f"{proxy.name} still running")


def run(args: argparse.Namespace, report: Report) -> None:
    processes = Processes(LOG_DIR)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as directory:
        scratch = Path(directory)
        scratch.chmod(0o755)  # a Postgres started as its own user must traverse it
        with stores(scratch) as found:
            database = f"gateway_soak_{uuid.uuid4().hex[:10]}"
            asyncio.run(drop_database(found, database, create_again=True))
            flush_redis(found, REDIS_DB)
            try:
                keymgmt, proxies = start_gateway(
                    processes, found, database, write_pricing(scratch), args.latency
                )
                asyncio.run(soak(args, keymgmt, proxies, found, report))
            finally:
                # A second Ctrl-C must not cut the clean-up short and leave servers behind.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                processes.stop_all()
                asyncio.run(drop_database(found, database))
                flush_redis(found, REDIS_DB)


def interrupted(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    report = Report()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        run(args, report)
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    print(f"\nlogs in {LOG_DIR}")
    if report.failures:
        print(f"soak: {len(report.failures)} check(s) failed", file=sys.stderr)
        return 1
    print("soak: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
