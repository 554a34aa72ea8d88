"""A Redis outage across four proxy replicas, three of which never served the key: every replica
serves, the fleet stays within the rate and the cost limit, and once Redis is back its window
counts what was admitted during the outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import services

from proxy.typedefs import LOCAL_LIMITS
from shared.config import Settings
from tests.e2e.conftest import Start, write_pricing
from tests.e2e.test_observability import events_of
from tests.e2e.test_redis_outage import CALL_COST, MESSAGES, MODEL, served

REPLICAS = 4
RATE_LIMIT = 26  # 6 a replica during the outage: (26 - 2) / 4; the budget would allow 7
COST_LIMIT = 30 * CALL_COST


@pytest.fixture
def durable_redis(scratch_dir: Path) -> Iterator[services.Redis]:
    """A Redis that keeps its data across a stop, as a real outage leaves it."""
    path = scratch_dir / f"redis-{time.monotonic_ns()}"
    with services.Redis(path, persistent=True) as server:
        yield server


async def test_four_replicas_share_every_limit_and_redis_counts_the_outage_afterwards(
    start_gateway: Start, settings: Settings, durable_redis: services.Redis, tmp_path: Path
) -> None:
    pricing = write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": 1e-4, "output_cost_per_token": 1e-3}}
    )
    gateway = await start_gateway(
        replicas=REPLICAS,
        redis=replace(settings.redis, port=durable_redis.port, db=0),
        pricing_file=pricing,
    )
    raw, config = await gateway.create_key(
        rateLimitOverTime=RATE_LIMIT, rateLimitUnit="m", costLimitInUsd=COST_LIMIT
    )
    key_id = config["keyId"]
    before, _ = await served(gateway.client(raw, 0), 2)  # only replica 0 serves the key
    await events_of(gateway.settings, key_id, before)  # recorded in Postgres
    locals_ = [proxy.app[LOCAL_LIMITS] for proxy in gateway.proxies]
    await asyncio.sleep(2.5)  # every replica has announced itself and counted the others
    assert [local.replicas_seen for local in locals_] == [REPLICAS] * REPLICAS

    await asyncio.to_thread(durable_redis.stop)
    during = [(await served(gateway.client(raw, r), 15))[0] for r in range(REPLICAS)]
    await asyncio.to_thread(durable_redis.start)
    # Each replica leaves local mode at its next call through Redis, one a second at most.
    after = 0
    async with asyncio.timeout(20):
        for replica, local in enumerate(locals_):
            client = gateway.client(raw, replica)
            while local.down_since is not None:
                try:
                    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                    after += 1
                except openai.RateLimitError:  # the window or the budget is used up
                    pass
                await asyncio.sleep(0.3)

    admitted = before + sum(during) + after
    usage = await gateway.spend(key_id)
    print(
        f"\nfleet outage, {REPLICAS} replicas: served during it {during} (replica 0 had seen the "
        f"key), {admitted} admitted in all against a rate limit of {RATE_LIMIT}; cost "
        f"{admitted * CALL_COST:.6f} USD of {COST_LIMIT:.6f}; Redis's window now counts "
        f"{usage['requestsInWindow']}"
    )
    assert all(n >= 1 for n in during)  # the replicas that never saw the key serve too
    assert admitted <= RATE_LIMIT
    assert admitted * CALL_COST <= COST_LIMIT + 1e-12
    # What was admitted locally is in Redis's window: it is not granted again.
    assert usage["requestsInWindow"] >= admitted
    spend = await gateway.settled_cost(key_id, admitted * CALL_COST, within=10)
    assert spend == pytest.approx(admitted * CALL_COST)
