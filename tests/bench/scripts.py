"""Micro-benchmark of the admission script in Redis: `python -m tests.bench.scripts`.

Redis's own time a call (INFO commandstats, on a throw-away server of its own so that nothing
else counts) for admit.lua admitting a key with a per-minute rate limit and a per-minute cost
limit whose windows hold all their 60 buckets, as a key under steady load does. With
`--baseline-tree PATH` the script of another checkout runs too, the two taking turns over the
rounds; each figure is the median round.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import redis

from deploy.local import services
from tests.bench.report import medians_table

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path("shared/lua/admit.lua")
KEYS = ("rate", "spend", "window-spend", "reservations", "reserved", "marker")
MINUTE_MS = 60_000
BUCKETS = 60
LIMIT = 10**15


def fill_windows(client: redis.Redis) -> None:
    client.flushdb()
    client.set("marker", 1)
    width = MINUTE_MS // BUCKETS
    newest = int(time.time() * 1000) // width
    for bucket in range(newest - BUCKETS + 1, newest + 1):
        client.hset("rate", str(bucket), 5)
        client.hset("window-spend", str(bucket), 5000)


def redis_us_a_call(client: redis.Redis, script: redis.commands.core.Script, calls: int) -> float:
    fill_windows(client)
    client.config_resetstat()
    for n in range(calls):
        script(keys=KEYS, args=[LIMIT, MINUTE_MS, LIMIT, LIMIT, MINUTE_MS, 1000, n, MINUTE_MS])
        if n % 10 == 9:  # settled, as calls in flight are
            client.delete("reservations", "reserved")
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path)
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline_tree:
        trees["baseline tree"] = args.baseline_tree
    figures: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as data, services.Redis(Path(data)) as server:
        client = redis.Redis(host=services.HOST, port=server.port)
        scripts = {
            name: client.register_script((tree / SCRIPT).read_text())
            for name, tree in trees.items()
        }
        for round_ in range(args.rounds):
            for name in trees if round_ % 2 == 0 else reversed(trees):
                figures[name].append(redis_us_a_call(client, scripts[name], args.calls))
    base = "baseline tree" if args.baseline_tree else "this tree"
    print(medians_table("admit.lua", "Redis µs a call", figures, base))


if __name__ == "__main__":
    main()
