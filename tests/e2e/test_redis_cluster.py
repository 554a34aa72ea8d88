"""The gateway on a Redis Cluster of three masters with a replica each, started here: the limit
tests hold as on one Redis, and a master killed under load fails over with no spend lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from shared.config import Settings
from shared.limit_keys import spend_key
from tests.e2e import test_limits_and_cost as limits
from tests.e2e import test_users as users
from tests.e2e.conftest import Gateway, Start
from tests.e2e.test_redis_failover import failover_under_load
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
    def fail_over(key_id: str) -> None:
        counters = spend_key(key_id)  # the master holding the key's counters dies
        old = failing_cluster.kill_master_of(counters)
        failing_cluster.wait_for_failover(counters, old)
        time.sleep(1)  # calls keep coming on the promoted replica, with no replica yet
        failing_cluster.rejoin(old)

    redis = replace(failing_cluster.settings(settings.redis), wait_replicas=1)
    await failover_under_load(start_gateway, redis, tmp_path, fail_over)
