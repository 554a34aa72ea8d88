"""The legs: what each one starts, and the requests its load generator sends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bench import cluster, gateway, litellm_leg
from tests.bench.loadgen import Target
from tests.bench.procs import PYTHON, Processes, Server, Unavailable, children, free_port, wait_http

PROXY_PREFIX = "/api/providers/openai/v1"
MODEL = gateway.BENCH_MODEL
CHAT = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in five words."},
    ],
    "max_tokens": 32,
}
ANTHROPIC_PREFIX = "/api/providers/anthropic/v1"
# The same conversation as CHAT, as a Messages API request (max_tokens is required there).
MESSAGES = {
    "model": "claude-3-5-haiku-20241022",
    "system": "You are a helpful assistant.",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 32,
}
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}
MESSAGE_STOP = b"event: message_stop"
START_TIMEOUT = 60.0
TITLES = {
    "direct": "direct",
    "passthrough": "bare pass-through",
    "passthrough_gc": "bare pass-through, the proxy's collector thresholds",
    "proxy": "proxy",
    "route": "proxy, a one-step route",
    "users": "proxy, two windows and a user",
    "baseline": "proxy, baseline tree",  # with --baseline-tree, never chosen by --legs
    "untraced": "proxy, telemetry off",
    "proxy2": "proxy x2 workers",
    "cluster": "proxy, Redis Cluster",
    "litellm": "LiteLLM",
    "anthropic_direct": "direct, Anthropic",
    "anthropic": "proxy, Anthropic",
}
# What a leg is measured against: started with it, whether asked for or not.
REFERENCES = {
    "anthropic": ("anthropic_direct",),
    "baseline": ("direct", "proxy"),
    "users": ("proxy",),
    "cluster": ("proxy",),
}


@dataclass(frozen=True)
class Leg:
    chat: Target
    stream: Target
    server: Server  # whose memory is reported
    shared: bool = False  # the upstream: every leg needs it, so it outlives this one


def leg_for(
    server: Server, path: str, api_key: str, shared: bool = False, chat: dict[str, object] = CHAT
) -> Leg:
    url = server.url(path + "/chat/completions")
    auth = {"Authorization": f"Bearer {api_key}"}
    stream = Target.json(url, {**chat, "stream": True}, auth)
    return Leg(Target.json(url, chat, auth), stream, server, shared)


def users_leg_for(server: Server, api_key: str) -> Leg:
    return leg_for(server, PROXY_PREFIX, api_key, chat={**CHAT, "user": gateway.BENCH_USER})


def anthropic_leg_for(server: Server, path: str, api_key: str, shared: bool = False) -> Leg:
    """Messages API calls, the key in `x-api-key` as the anthropic SDK sends it."""
    url = server.url(path + "/messages")
    headers = {"x-api-key": api_key, **ANTHROPIC_VERSION}
    stream = Target.json(url, {**MESSAGES, "stream": True}, headers, MESSAGE_STOP)
    return Leg(Target.json(url, MESSAGES, headers), stream, server, shared)


@dataclass
class Starters:
    """Starts the server of each leg, against one upstream, and waits until it answers."""

    processes: Processes
    stores: gateway.Stores
    upstream: Server
    keys: gateway.BenchKeys  # the gateway keys the proxy legs present
    work_dir: Path
    deployments: contextlib.ExitStack  # what the legs start besides servers: the cluster
    baseline_tree: Path | None = None  # another checkout, whose proxy the baseline leg runs

    def by_name(self) -> dict[str, Callable[[], Leg]]:
        return {
            "direct": self.direct,
            "passthrough": self.passthrough,
            "passthrough_gc": lambda: self.passthrough(spare_the_collector=True),
            "proxy": lambda: self.proxy(1),
            "route": self.route,
            "users": self.users,
            "baseline": self.baseline,
            "untraced": self.untraced,
            "proxy2": lambda: self.proxy(2),
            "cluster": self.cluster,
            "litellm": self.litellm,
            "anthropic_direct": self.anthropic_direct,
            "anthropic": self.anthropic,
        }

    def direct(self) -> Leg:
        return leg_for(self.upstream, "/v1", gateway.UPSTREAM_KEY, shared=True)

    def passthrough(self, spare_the_collector: bool = False) -> Leg:
        """The floor; sparing the collector as the proxy does, the floor the proxy could reach."""
        port = free_port()
        argv = [PYTHON, "-m", "tests.bench.passthrough", "--upstream", self.upstream.url("")]
        argv += ["--port", str(port)]
        if spare_the_collector:
            argv.append("--spare-the-collector")
        name = "passthrough_gc" if spare_the_collector else "passthrough"
        server = self.processes.start(name, argv, port, under_test=True)
        wait_http(server, "/v1/models", START_TIMEOUT)
        return leg_for(server, "/v1", gateway.UPSTREAM_KEY)

    def proxy(self, workers: int) -> Leg:
        name = "proxy" if workers == 1 else f"proxy{workers}"
        server = gateway.start_proxy(self.processes, self.stores, self.upstream, name, workers)
        wait_http(server, "/api/health", START_TIMEOUT)
        if workers > 1:
            require_workers(server, workers)
        return self.openai_leg(server)

    def baseline(self) -> Leg:
        if self.baseline_tree is None:
            raise Unavailable("no --baseline-tree given")
        server = gateway.start_proxy(
            self.processes, self.stores, self.upstream, "baseline", tree=self.baseline_tree
        )
        wait_http(server, "/api/health", START_TIMEOUT)
        return self.openai_leg(server)

    def route(self) -> Leg:
        """The proxy leg's call through a route of one step: what the route loop adds."""
        server = gateway.start_proxy(self.processes, self.stores, self.upstream, "route")
        wait_http(server, "/api/health", START_TIMEOUT)
        prefix = "/api/routes" + gateway.ROUTE_PATH.removesuffix("/chat/completions")
        return leg_for(server, prefix, self.keys.openai)

    def users(self) -> Leg:
        """The proxy leg's call with a key of two windows, naming that key's user: both windows
        and the user's limits are admitted in the one script."""
        server = gateway.start_proxy(self.processes, self.stores, self.upstream, "users")
        wait_http(server, "/api/health", START_TIMEOUT)
        return users_leg_for(server, self.keys.users)

    def untraced(self) -> Leg:
        server = gateway.start_proxy(
            self.processes,
            self.stores,
            self.upstream,
            "untraced",
            module="tests.bench.untraced_proxy",
        )
        wait_http(server, "/api/health", START_TIMEOUT)
        return self.openai_leg(server)

    def cluster(self) -> Leg:
        """The proxy leg on a Redis Cluster of its own, the keys as ever from Postgres."""
        with self.stores.redis_client(gateway.REDIS_DB) as standalone:
            deployment = cluster.start(self.deployments, self.work_dir / "cluster", standalone)
        server = gateway.start_proxy(
            self.processes,
            self.stores,
            self.upstream,
            "cluster",
            settings=cluster.proxy_env(deployment),
        )
        wait_http(server, "/api/health", START_TIMEOUT)
        return self.openai_leg(server)

    def openai_leg(self, server: Server) -> Leg:
        return leg_for(server, PROXY_PREFIX, self.keys.openai)

    def litellm(self) -> Leg:
        port = free_port()
        server = litellm_leg.start(self.processes, self.upstream, self.work_dir, MODEL, port)
        return leg_for(server, "/v1", litellm_leg.MASTER_KEY)

    def anthropic_direct(self) -> Leg:
        return anthropic_leg_for(self.upstream, "/v1", gateway.UPSTREAM_KEY, shared=True)

    def anthropic(self) -> Leg:
        server = gateway.start_proxy(self.processes, self.stores, self.upstream, "anthropic")
        wait_http(server, "/api/health", START_TIMEOUT)
        return anthropic_leg_for(server, ANTHROPIC_PREFIX, self.keys.anthropic)


def require_workers(server: Server, workers: int) -> None:
    # Let every worker load its snapshot, not only the one that answered the health check.
    time.sleep(2.0)
    found = len(children(server.pid))
    if found < workers - 1:
        raise Unavailable(f"PROXY_WORKERS={workers} ran {found + 1} process(es): not implemented")
