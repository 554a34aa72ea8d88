"""The benchmark's own logic: the Anthropic leg's requests against the real fake upstream, the
users leg's key, user and requests, which legs a run starts, and how rounds are combined and
paired in the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import services
from aiohttp.test_utils import TestServer

from proxy.fakeupstream import FakeOptions, create_fake_upstream
from proxy.users import named_user
from shared.config import Settings
from shared.schemas import CreateKeySchema, CreateUserSchema
from tests.bench import cluster, gateway, legs, loadgen, report, run
from tests.bench.procs import HOST, Server
from tests.redisdeploy import ClusterDeployment


def fake_server(server: TestServer) -> Server:
    # Only its port is read: the requests go to a TestServer of this process.
    return Server("upstream", server.port or 0, Path("/dev/null"), proc=None)  # type: ignore[arg-type]


async def test_the_anthropic_leg_completes_a_streamed_and_an_unstreamed_call(
    aiohttp_server: Any,
) -> None:
    upstream = fake_server(await aiohttp_server(create_fake_upstream(FakeOptions(record=False))))
    leg = legs.anthropic_leg_for(upstream, "/v1", gateway.UPSTREAM_KEY)

    unstreamed = await loadgen.sequential(loadgen.full_response(leg.chat), 3, warmup=0)
    streamed = await loadgen.sequential(loadgen.first_byte(leg.stream), 3, warmup=0)

    assert (unstreamed["n"], unstreamed["errors"]) == (3, 0)
    assert (streamed["n"], streamed["errors"]) == (3, 0)


async def test_an_anthropic_stream_is_not_complete_by_the_openai_end(aiohttp_server: Any) -> None:
    upstream = fake_server(await aiohttp_server(create_fake_upstream(FakeOptions(record=False))))
    stream = legs.anthropic_leg_for(upstream, "/v1", gateway.UPSTREAM_KEY).stream
    openai_ended = loadgen.Target(stream.url, stream.headers, stream.body)

    figures = await loadgen.sequential(loadgen.first_byte(openai_ended), 2, warmup=0)

    assert figures["failures"] == {"incomplete event stream": 2}


def test_the_load_generator_process_gets_the_stream_end() -> None:
    target = loadgen.Target.json("http://h/v1/messages", {"a": 1}, {"x": "y"}, legs.MESSAGE_STOP)

    args = loadgen.parse_args(loadgen.command("ttfb", target, requests=5)[3:])

    assert args.stream_end.encode() == legs.MESSAGE_STOP
    assert (args.url, args.header, args.requests) == (
        target.url,
        ["Content-Type: application/json", "x: y"],
        5,
    )


def test_every_users_leg_call_names_the_bench_user_and_the_proxy_legs_do_not() -> None:
    server = Server("users", 1, Path("/dev/null"), proc=None)  # type: ignore[arg-type]
    users = legs.users_leg_for(server, "sk-users")
    proxy = legs.leg_for(server, legs.PROXY_PREFIX, "sk-one-window")

    assert [named_user(orjson.loads(t.body)) for t in (users.chat, users.stream)] == [
        gateway.BENCH_USER
    ] * 2
    assert [named_user(orjson.loads(t.body)) for t in (proxy.chat, proxy.stream)] == ["", ""]
    assert users.chat.url == proxy.chat.url
    assert users.chat.headers["Authorization"] == "Bearer sk-users"


def test_the_users_leg_key_has_two_windows_and_its_user_limits_of_its_own() -> None:
    key = gateway.two_window_key("sk-users")
    user = gateway.bench_user("6d0ed3ff-8890-4c49-8361-e6c34534db13")

    assert CreateKeySchema().validate(key) == {}
    assert CreateUserSchema().validate(user) == {}
    # Windows of one unit count as one: the extra window must be of another unit.
    assert len({key["rateLimitUnit"], *(w["unit"] for w in key["rateLimits"])}) == 2
    assert user["keyIds"] == ["6d0ed3ff-8890-4c49-8361-e6c34534db13"]
    assert {"rateLimitOverTime", "costLimitInUsd"} <= user.keys()


def test_a_run_starts_the_legs_each_leg_is_measured_against() -> None:
    chosen = argparse.Namespace(legs=["anthropic"], baseline_tree=Path("/tmp/base"))

    assert run.leg_names(chosen) == ["direct", "proxy", "baseline", "anthropic_direct", "anthropic"]
    assert run.leg_names(argparse.Namespace(legs=["proxy"], baseline_tree=None)) == ["proxy"]
    users = argparse.Namespace(legs=["users"], baseline_tree=None)
    assert run.leg_names(users) == ["proxy", "users"]


def rounds(*p50s: float) -> list[dict[str, Any]]:
    return [{"n": 10, "errors": 0, "p50": p, "p99": 2 * p, "max": 3 * p, "mean": p} for p in p50s]


def leg(title: str, p50s: tuple[float, ...], rps: list[float]) -> report.LegResult:
    result = report.LegResult(title, round_latency=rounds(*p50s), round_ttfb=rounds(*p50s))
    result.latency = report.combined(result.round_latency)
    result.round_rps, result.round_cpu_us = rps, [100.0] * len(rps)
    return result


def test_rounds_combine_as_medians_and_pair_round_by_round() -> None:
    direct = leg("direct", (0.2, 0.9, 0.3), [1000, 500, 1000])
    proxy = leg("proxy", (1.0, 1.6, 1.2), [400, 100, 500])

    assert report.combined(direct.round_latency) == {
        "n": 30,
        "errors": 0,
        "rounds": 3,
        "p50": 0.3,
        "p99": 0.6,
        "max": 2.7,
        "mean": 0.3,
    }
    # Per round 0.8, 0.7, 0.9: the slow second round moved both legs alike.
    assert report.paired_added(proxy, direct, "latency", "p50") == 0.8
    assert report.ratio_by_round(proxy, direct) == [0.4, 0.2, 0.5]


def test_the_anthropic_target_is_judged_on_its_own_direct_leg() -> None:
    results = report.Results(
        legs={
            "anthropic_direct": leg("direct, Anthropic", (0.2, 0.2, 0.2), [900, 900, 900]),
            "anthropic": leg("proxy, Anthropic", (1.4, 1.3, 1.5), [300, 300, 300]),
        }
    )

    check = next(c for c in report.checks(results) if c.figure.startswith("Anthropic path"))

    assert check.row().endswith("| 1.20 ms | ≤ 1.0 ms | **missed** |")
    assert "| **median** | 1.20 |" in report.anthropic_path(results)


def test_the_before_and_after_table_has_a_row_per_round_and_the_medians() -> None:
    results = report.Results(
        legs={
            "direct": leg("direct", (0.2, 0.2, 0.2), [900, 900, 900]),
            "proxy": leg("proxy", (1.0, 1.1, 1.0), [300, 330, 310]),
            "baseline": leg("proxy, baseline tree", (1.0, 1.0, 1.0), [300, 300, 300]),
        }
    )

    table = report.openai_before_after(results)

    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 3", "| **median**"]
    assert "| 1.033x |" in rows[-1]


def test_the_users_leg_is_judged_on_cpu_beyond_the_proxy_in_the_same_round() -> None:
    proxy = leg("proxy", (1.0, 1.0, 1.0), [300, 300, 300])
    users = leg("proxy, two windows and a user", (1.0, 1.0, 1.0), [290, 290, 290])
    proxy.round_cpu_us, users.round_cpu_us = [200.0, 400.0, 250.0], [210.0, 480.0, 280.0]
    results = report.Results(legs={"proxy": proxy, "users": users})

    check = next(c for c in report.checks(results) if c.figure.startswith("two windows"))

    # Per round +5%, +20%, +12%: the median, not the ratio of the medians (280 / 250).
    assert check.row().endswith("| 12.00% | ≤ 10% | **missed** |")
    assert "| **median** | 250 | 280 | +30 | +12.0% |" in report.users_table(results)


def test_a_cluster_run_starts_the_proxy_leg_beside_it() -> None:
    chosen = argparse.Namespace(legs=["cluster"], baseline_tree=None)

    assert run.leg_names(chosen) == ["proxy", "cluster"]


def test_the_cluster_leg_is_judged_on_throughput_against_the_proxy_in_the_same_round() -> None:
    proxy = leg("proxy", (1.0, 1.0, 1.0), [300, 200, 400])
    on_cluster = leg("proxy, Redis Cluster", (1.1, 1.1, 1.1), [270, 170, 380])
    results = report.Results(legs={"proxy": proxy, "cluster": on_cluster})

    check = next(c for c in report.checks(results) if c.figure.startswith("Redis Cluster"))

    # Per round 0.90, 0.85, 0.95: the median of the rounds, not the ratio of the medians.
    assert check.row().endswith("| 0.90x | ≥ 0.9x | met |")


def test_the_proxy_of_the_cluster_leg_runs_in_cluster_mode_on_every_node(tmp_path: Path) -> None:
    deployment = ClusterDeployment(tmp_path)  # not started: its nodes' ports are chosen
    stores = gateway.Stores(HOST, 5432, "postgres", "", HOST, 6379, "standalone-secret")

    environment = gateway.service_env(stores, **cluster.proxy_env(deployment))
    redis_settings = Settings.from_env(environment).redis

    assert (redis_settings.mode, redis_settings.db, redis_settings.password) == ("cluster", 0, "")
    assert sorted(redis_settings.addresses()) == sorted((n.host, n.port) for n in deployment.nodes)


@pytest.mark.parametrize("persistent", [False, True])
def test_the_bench_cluster_persists_as_the_standalone_redis_does(
    tmp_path: Path, persistent: bool
) -> None:
    standalone = services.Redis(tmp_path / "standalone", persistent=persistent)
    with standalone, redis.Redis(host=standalone.host, port=standalone.port) as client:
        persistence = cluster.persistence_of(client)
        expected = client.config_get("append*")
    node = ClusterDeployment(tmp_path / "cluster", persistence=persistence).nodes[0]

    with node, node.client() as client:
        started = client.config_get("append*")

    assert {k: started[k] for k in ("appendonly", "appendfsync")} == {
        k: expected[k] for k in ("appendonly", "appendfsync")
    }


def test_a_test_cluster_stays_durable_by_default(tmp_path: Path) -> None:
    assert all(node.durable for node in ClusterDeployment(tmp_path).nodes)
