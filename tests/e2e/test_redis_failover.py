"""A Sentinel-managed master killed under load: the proxies follow the failover, and the spend
after it is what upstream reported for every call served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest

from shared.config import RedisSettings, Settings
from tests.e2e.conftest import Start, write_pricing
from tests.redisdeploy import Access, SentinelDeployment, make_tls

MODEL = "failover-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hello there friend"}]
CALL_COST = 6 * 1e-4 + 5 * 1e-3  # the fake's 6 prompt and 5 completion tokens at these prices
WORKERS = 4  # concurrent callers per proxy replica


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelDeployment]:
    access = Access(tls=make_tls(tmp_path / "tls"), acl=True)
    with SentinelDeployment(tmp_path / "redis", access) as deployment:
        yield deployment


async def failover_under_load(
    start_gateway: Start, redis: RedisSettings, tmp_path: Path, fail_over: Callable[[str], None]
) -> None:
    """Two proxies calling with one key while `fail_over` (given the key's id) kills a master,
    waits for the failover and brings the old master back; then the spend must be the upstream
    usage of every call served. Prints the calls served and the spend lost."""
    pricing = write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": 1e-4, "output_cost_per_token": 1e-3}}
    )
    gateway = await start_gateway(replicas=2, redis=redis, pricing_file=pricing)
    raw, config = await gateway.create_key(costLimitInUsd=100_000 * CALL_COST)
    clients = [gateway.client(raw, replica) for replica in (0, 1)]
    served, refused = [0], [0]
    stop = asyncio.Event()

    async def load(client: openai.AsyncOpenAI) -> None:
        while not stop.is_set():
            try:
                await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                served[0] += 1
            except openai.APIStatusError:
                refused[0] += 1
                await asyncio.sleep(0.05)

    callers = [asyncio.create_task(load(c)) for c in clients for _ in range(WORKERS)]
    await asyncio.sleep(1)
    before_kill = served[0]
    await asyncio.to_thread(fail_over, config["keyId"])
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*callers)

    expected = served[0] * CALL_COST
    spend = await gateway.settled_cost(config["keyId"], expected, within=30)
    print(
        f"\n{redis.mode} failover under load: {served[0]} calls served ({before_kill} before the "
        f"kill), {refused[0]} refused; spend {spend:.6f} USD, upstream usage {expected:.6f} USD, "
        f"spend lost {expected - spend:.6f} USD"
    )
    assert before_kill > 0 and served[0] > before_kill
    assert spend == pytest.approx(expected)


async def test_a_master_killed_mid_load_fails_over_and_loses_no_spend(
    start_gateway: Start, settings: Settings, sentinel_set: SentinelDeployment, tmp_path: Path
) -> None:
    def fail_over(_key_id: str) -> None:
        old, new = sentinel_set.kill_master()
        sentinel_set.wait_for_failover(new)
        time.sleep(1)  # calls keep coming on the new master, with no replica yet
        sentinel_set.rejoin(old, new)

    redis = replace(sentinel_set.settings(settings.redis), db=0)
    await failover_under_load(start_gateway, redis, tmp_path, fail_over)
