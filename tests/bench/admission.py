"""Micro-benchmark of admission: `python -m tests.bench.admission [--redis-db N]`.

The proxy's CPU per admitted call (time.process_time, this process only: Redis's own time is
not the proxy's) for a key with one rate window against a key with two windows and an end user
with a rate and a cost limit, 50 calls in flight, through the real LimitEngine and a local
Redis; plus the lookup of the call's user. The difference is what the extra windows and the
user cost the proxy per request. Side by side, each key through the LeasingEngine (proxy/lease.py:
the one-window key is mostly admitted from leases, the key with a user never), and the call
built and its user found without any admission: what the admission itself costs is the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from proxy.calls import Call
from proxy.lease import LeasingEngine
from proxy.users import UserSnapshot, attach_user
from shared.admissions import limited_user
from shared.config import RedisSettings
from shared.limit_keys import SPEND_MARKER
from shared.limits import LimitEngine
from shared.models import Key, User
from shared.redispipe import RedisPipe
from tests.unit.targets import OPENAI_TARGET

CALLS, IN_FLIGHT = 20_000, 50


def key(**limits: object) -> Key:
    return Key(key_id=str(uuid.uuid4()), name="", key_hash=uuid.uuid4().hex, created_at=0,
               updated_at=0, tags=("bench",), **limits)  # type: ignore[arg-type]  # fmt: skip


async def cpu_us_per_call(
    engine: LimitEngine | None, holder: Key, user: User | None
) -> tuple[float, float]:
    """µs of CPU per call, and the share of the calls admitted from a lease; with no engine, the
    call built and its user found, not admitted."""
    users = UserSnapshot()
    users.replace([user] if user is not None else [])
    payload = {"model": "gpt-4o-mini", "user": "alice"}
    leased = 0

    async def one() -> None:
        nonlocal leased
        call = Call("r", holder, OPENAI_TARGET, "chat/completions", b"", payload)
        attach_user(call, users)
        if engine is not None:
            admission = await engine.admit(holder, 1000, limited_user(call.user))
            leased += admission.lease is not None

    started = time.process_time()
    for _ in range(CALLS // IN_FLIGHT):
        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
    return (time.process_time() - started) * 1e6 / CALLS, leased / CALLS


async def main(db: int) -> None:
    pipe = RedisPipe(RedisSettings(db=db))
    await pipe.replies([("SET", SPEND_MARKER, "bench")])
    engine = LimitEngine(pipe, reservation_lifetime=60)
    leasing = LeasingEngine(pipe, reservation_lifetime=60)
    big = 10**9
    one_window = key(rate_limit_over_time=big, rate_limit_unit="m", cost_limit_in_usd=1e6)
    two_windows = key(rate_limit_over_time=big, rate_limit_unit="m", cost_limit_in_usd=1e6,
                      rate_limits=((big, "s"),))  # fmt: skip
    user = User(record_id=str(uuid.uuid4()), user_id="alice", created_at=0, updated_at=0,
                key_ids=(two_windows.key_id,), rate_limit_over_time=big, rate_limit_unit="m",
                cost_limit_in_usd=1e6)  # fmt: skip
    await cpu_us_per_call(engine, one_window, None)  # warm-up
    await cpu_us_per_call(leasing, one_window, None)
    # A key with a user is never leased: there the leasing engine costs only its bookkeeping.
    print(f"{'µs of CPU a call':>28}  via Redis  leasing engine (from a lease)  no admission")
    for label, holder, holder_user in (
        ("one window", one_window, None),
        ("two windows + user", two_windows, user),
        ("one window (again)", one_window, None),
        ("two windows + user (again)", two_windows, user),
    ):
        via_redis, _ = await cpu_us_per_call(engine, holder, holder_user)
        leasing_us, share = await cpu_us_per_call(leasing, holder, holder_user)
        alone, _ = await cpu_us_per_call(None, holder, holder_user)
        print(f"{label:>28}  {via_redis:9.1f}  {leasing_us:14.1f} ({share:4.0%})  {alone:19.1f}")
    await leasing.close()
    await pipe.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-db", type=int, default=15)
    asyncio.run(main(parser.parse_args().redis_db))
