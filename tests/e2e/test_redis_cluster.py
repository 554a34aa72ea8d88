"""The gateway on a Redis Cluster of three masters with a replica each, started here: the limit
tests hold as on one Redis, and a master killed under load fails over with no spend lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest

from shared.config import Settings
from shared.limit_keys import spend_key
from tests.e2e import test_limits_and_cost as limits
from tests.e2e import test_users as users
from tests.e2e.conftest import Gateway, Start, write_pricing
from tests.e2e.test_redis_failover import CALL_COST, MESSAGES, MODEL, WORKERS
from tests.redisdeploy import ClusterDeployment

pricing_file = limits.pricing_file


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    with ClusterDeployment(tmp_path_factory.mktemp("cluster")) as deployment:
        deployment.mark_spend_held()
        yield deployment


@pytest.fixture
async def priced(
    start_gateway: Start, settings: Settings, cluster: ClusterDeployment, pricing_file: str
) -> Gateway:
    """Two replicas on the cluster, billing by the limit tests' prices."""
    on_cluster = cluster.settings(settings.redis)
    return await start_gateway(replicas=2, redis=on_cluster, pricing_file=pricing_file)


async def test_rate_limit_is_exact_on_two_replicas(priced: Gateway) -> None:
    await limits.test_concurrent_requests_on_two_replicas_admit_exactly_the_rate_limit(priced)


async def test_spend_never_passes_the_cost_limit(priced: Gateway) -> None:
    await limits.test_concurrent_requests_never_drive_spend_past_the_cost_limit(priced)


async def test_a_refusal_by_calls_in_flight_is_retried(priced: Gateway) -> None:
    windowed = {"costLimitInUsdOverTime": 3 * limits.CHAT_COST, "costLimitInUsdUnit": "h"}
    await limits.test_a_refusal_caused_by_a_call_in_flight_is_retried_by_the_sdk(priced, windowed)


async def test_a_users_budget_and_rate_hold_in_their_own_slot(priced: Gateway) -> None:
    await users.test_a_users_spent_budget_refuses_that_user_and_serves_another(priced)
    await users.test_a_users_rate_limit_and_rules_hold_on_both_replicas(priced)


@pytest.fixture
def failing_cluster(tmp_path: Path) -> Iterator[ClusterDeployment]:
    with ClusterDeployment(tmp_path / "cluster") as deployment:
        deployment.mark_spend_held()
        yield deployment


async def test_a_master_killed_mid_load_fails_over_and_loses_no_spend(
    start_gateway: Start, settings: Settings, failing_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    pricing = write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": 1e-4, "output_cost_per_token": 1e-3}}
    )
    on_cluster = replace(failing_cluster.settings(settings.redis), wait_replicas=1)
    gateway = await start_gateway(replicas=2, redis=on_cluster, pricing_file=pricing)
    raw, config = await gateway.create_key(costLimitInUsd=100_000 * CALL_COST)
    clients = [gateway.client(raw, replica) for replica in (0, 1)]
    served, refused = [0], [0]
    stop = asyncio.Event()

    async def load(client: openai.AsyncOpenAI) -> None:
        messages: Any = MESSAGES
        while not stop.is_set():
            try:
                await client.chat.completions.create(model=MODEL, messages=messages)
                served[0] += 1
            except openai.APIStatusError:
                refused[0] += 1
                await asyncio.sleep(0.05)

    callers = [asyncio.create_task(load(c)) for c in clients for _ in range(WORKERS)]
    await asyncio.sleep(1)
    before_kill = served[0]
    counters = spend_key(config["keyId"])
    old = await asyncio.to_thread(failing_cluster.kill_master_of, counters)
    await asyncio.to_thread(failing_cluster.wait_for_failover, counters, old)
    await asyncio.sleep(1)  # calls keep coming on the promoted replica, with no replica yet
    await asyncio.to_thread(failing_cluster.rejoin, old)
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*callers)

    expected = served[0] * CALL_COST
    spend = await gateway.settled_cost(config["keyId"], expected, within=30)
    print(
        f"\ncluster failover under load: {served[0]} calls served ({before_kill} before the "
        f"kill), {refused[0]} refused; spend {spend:.6f} USD, upstream usage {expected:.6f} USD, "
        f"spend lost {expected - spend:.6f} USD"
    )
    assert before_kill > 0 and served[0] > before_kill
    assert spend == pytest.approx(expected)
