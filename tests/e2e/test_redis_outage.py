"""Redis stopped and restarted empty under traffic: calls keep flowing, no spend is lost, and no
call is admitted past a limit."""

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
from tests.e2e.conftest import Gateway, Start, write_pricing
from tests.e2e.test_observability import events_of

MODEL = "outage-model"
MESSAGES = [{"role": "user", "content": "hello there friend"}]
CALL_COST = 6 * 1e-4 + 5 * 1e-3  # the fake's 6 prompt and 5 completion tokens at these prices


@pytest.fixture
def private_redis(scratch_dir: Path) -> Iterator[services.Redis]:
    with services.Redis(scratch_dir / f"redis-{time.monotonic_ns()}") as server:
        yield server


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": 1e-4, "output_cost_per_token": 1e-3}}
    )


async def served(client: openai.AsyncOpenAI, attempts: int) -> tuple[int, list[int]]:
    """How many of `attempts` calls were served, and the Retry-After of each one refused."""
    ok, retry_after = 0, []
    for _ in range(attempts):
        try:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
            ok += 1
        except openai.RateLimitError as error:
            retry_after.append(int(error.response.headers["Retry-After"]))
    return ok, retry_after


async def spend_reaches(gateway: Gateway, key_id: str, expected: float, within: float) -> float:
    deadline = time.monotonic() + within
    while True:
        response = await gateway.keymgmt.get(f"/api/reporting/keys/{key_id}")
        if response.status == 200:
            spend = (await response.json())["costInUsd"]
            if spend >= expected - 1e-9 or time.monotonic() > deadline:
                return float(spend)
        elif time.monotonic() > deadline:
            raise AssertionError(f"reporting still answers {response.status}")
        await asyncio.sleep(0.2)


async def redis_trusted_again(gateway: Gateway, within: float) -> None:
    """Until every replica decides through Redis again."""
    for _ in range(int(within / 0.1)):
        if all(proxy.app[LOCAL_LIMITS].down_since is None for proxy in gateway.proxies):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still in local mode after {within} s")


async def test_redis_restarted_empty_loses_no_spend_and_admits_nothing_past_a_limit(
    start_gateway: Start, settings: Settings, private_redis: services.Redis, pricing_file: str
) -> None:
    redis_settings = replace(settings.redis, port=private_redis.port, db=0)
    gateway = await start_gateway(
        redis=redis_settings, pricing_file=pricing_file, redis_outage_share=0.5
    )
    raw, config = await gateway.create_key(
        rateLimitOverTime=20, rateLimitUnit="m", costLimitInUsd=1000 * CALL_COST
    )
    client = gateway.client(raw)
    before, _ = await served(client, 3)
    await events_of(gateway.settings, config["keyId"], 3)  # in Postgres before Redis goes
    spend_before = await spend_reaches(gateway, config["keyId"], before * CALL_COST, 2)

    await asyncio.to_thread(private_redis.stop)
    during, refused = await served(client, 15)
    await asyncio.to_thread(private_redis.start)  # empty: it kept nothing on disk

    spend_after = await spend_reaches(gateway, config["keyId"], (before + during) * CALL_COST, 15)
    admitted = before + during
    print(
        f"\nredis outage: served {during} of 15 calls during it ({len(refused)} refused locally); "
        f"spend before {spend_before:.6f} USD, after {spend_after:.6f} USD, "
        f"expected {admitted * CALL_COST:.6f}; calls admitted past the rate limit of 20: "
        f"{max(0, admitted - 20)}"
    )
    # Half of the 17 the window had left: REDIS_OUTAGE_SHARE overrides the fleet's 1/replicas.
    assert during == 8
    assert spend_after == pytest.approx(admitted * CALL_COST)
    # A local refusal is provisional: retry soon, when Redis may be back, not in half a window.
    assert refused and all(1 <= seconds <= 10 for seconds in refused)
    # Every call served, before or during the outage, is recorded once in Postgres.
    events = await events_of(gateway.settings, config["keyId"], admitted)
    assert len(events) == admitted
    # Redis is trusted again once the spend is back (and a grace for the other replicas to write
    # back theirs): calls go through it.
    await redis_trusted_again(gateway, within=15)
    assert (await served(client, 1))[0] == 1
    assert await spend_reaches(gateway, config["keyId"], (admitted + 1) * CALL_COST, 3) == (
        pytest.approx((admitted + 1) * CALL_COST)
    )


async def test_a_key_never_served_by_the_replica_is_served_from_its_recorded_spend(
    start_gateway: Start, settings: Settings, private_redis: services.Redis, pricing_file: str
) -> None:
    redis_settings = replace(settings.redis, port=private_redis.port, db=0)
    gateway = await start_gateway(redis=redis_settings, pricing_file=pricing_file)
    limit = CALL_COST * 20
    spent, config = await gateway.create_key(costLimitInUsd=limit)
    assert (await served(gateway.client(spent), 4))[0] == 4
    await events_of(gateway.settings, config["keyId"], 4)  # recorded in Postgres
    fresh = await start_gateway(redis=redis_settings, pricing_file=pricing_file)  # never saw it
    rate_only, _ = await fresh.create_key(rateLimitOverTime=10, rateLimitUnit="m")
    await asyncio.sleep(2.5)  # both replicas announced: each takes half of what is left
    await asyncio.to_thread(private_redis.stop)
    during, refused = await served(fresh.client(spent), 20)
    print(f"\nnever served here, during the outage: {during} calls served, {len(refused)} refused")
    assert during >= 1 and refused
    assert during * CALL_COST <= (limit - 4 * CALL_COST) / 2
    assert (await fresh.client(rate_only).models.list()).data
