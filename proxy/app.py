"""The proxy application factory; the tests build the app with it too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from proxy.changefeed import ChangeFeed, FeedMetrics, Reloader
from proxy.errors import not_found
from proxy.fallback import LocalLimits
from proxy.forward import handler_of, request_id_of
from proxy.jobs import job_watcher
from proxy.lease import LeasingEngine
from proxy.paths import OPENAI_PREFIX
from proxy.policies.snapshot import POLICIES as POLICY_SOURCE
from proxy.policies.snapshot import PolicySnapshot
from proxy.provider_settings import SettingSnapshot, setting_source
from proxy.providers import ADAPTERS
from proxy.recorded import RecordedSpend
from proxy.routes.cache import ResponseCache
from proxy.routes.cooldown import CoolDowns
from proxy.routes.loop import handle_route
from proxy.routes.snapshot import ROUTE_SOURCE, RouteSnapshot
from proxy.settlement import Settler
from proxy.snapshot import KeySnapshot, SnapshotRefresher
from proxy.targets import Targets
from proxy.telemetry import ProxyMetrics, call_log
from proxy.typedefs import (
    CALL_LOG,
    COOL_DOWNS,
    LIMITS,
    LOCAL_LIMITS,
    METRICS,
    POLICIES,
    PRICING,
    PROVIDER_SETTINGS,
    REGISTRY,
    ROUTE_CACHE,
    ROUTES,
    SESSION,
    SETTINGS,
    SETTLER,
    SNAPSHOT,
    TARGETS,
    USERS,
)
from proxy.upstream import create_session
from proxy.users import USERS as USER_SOURCE
from proxy.users import UserSnapshot
from shared import tokens
from shared.changes import KEY, POLICY, ROUTE, SETTING, USER
from shared.clusterpipe import open_pipe
from shared.config import Settings
from shared.jsonutil import json_response
from shared.limit_keys import Layout
from shared.limits import announce, withdraw
from shared.metrics import Metrics
from shared.pg import LazyConnection
from shared.pricing import Pricing
from shared.redispipe import Pipe
from shared.runtime import stop_task
from shared.secrets import SecretBox

# How long a graceful stop waits for queued spend to reach Redis.
DRAIN_TIMEOUT = 10.0
# Each replica renews its announcement this often; one not renewed lapses after the TTL, so the
# others count a replica that is gone for a few seconds at most.
ANNOUNCE_INTERVAL = 2.0
ANNOUNCE_TTL_MS = 10_000
log = logging.getLogger("gateway.proxy")


async def snapshots(app: web.Application) -> AsyncIterator[None]:
    """Keys, users, provider settings, routes and policies, each refreshed on its own and by the
    change feed, over one Postgres connection."""
    settings = app[SETTINGS]
    database = LazyConnection(settings.postgres)
    interval, errors = settings.snapshot_interval, app[METRICS].postgres_errors
    key = settings.settings_encryption_key
    settings_source = setting_source(SecretBox(key) if key else None)
    # Read out first: inside the generic calls below, mypy would type the lookups by them.
    key_snapshot, setting_snapshot = app[SNAPSHOT], app[PROVIDER_SETTINGS]
    route_snapshot, policy_snapshot = app[ROUTES], app[POLICIES]
    user_snapshot = app[USERS]
    keys = SnapshotRefresher(database, key_snapshot, interval, errors)
    provider_settings = SnapshotRefresher(
        database, setting_snapshot, interval, errors, settings_source
    )
    routes = SnapshotRefresher(database, route_snapshot, interval, errors, ROUTE_SOURCE)
    policies = SnapshotRefresher(database, policy_snapshot, interval, errors, POLICY_SOURCE)
    users = SnapshotRefresher(database, user_snapshot, interval, errors, USER_SOURCE)
    refreshers: dict[str, SnapshotRefresher[Any]] = {
        KEY: keys,
        SETTING: provider_settings,
        ROUTE: routes,
        POLICY: policies,
        USER: users,
    }
    tasks = [
        asyncio.create_task(refresher.run(), name=f"{kind}-snapshot-refresher")
        for kind, refresher in refreshers.items()
    ]
    tasks.append(asyncio.create_task(change_feed(app, refreshers).run(), name="change-feed"))
    yield
    for task in reversed(tasks):
        await stop_task(task)
    await database.close()


async def token_encodings(app: web.Application) -> AsyncIterator[None]:
    # Loaded on the event loop at the first uncounted answer, they would stall every call.
    await asyncio.to_thread(tokens.load_encodings)
    yield


def change_feed(app: web.Application, reloaders: Mapping[str, Reloader]) -> ChangeFeed:
    registry = app[REGISTRY]
    metrics = FeedMetrics.register(registry, app[METRICS].postgres_errors)
    feed = ChangeFeed(app[SETTINGS].postgres.for_listening(), reloaders, metrics)
    registry.gauge(
        "gateway_change_feed_listening",
        "1 while the change feed listens, 0 while changes wait for the periodic refresh",
        lambda: 1 if feed.listening else 0,
    )
    return feed


async def limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pipe = open_pipe(settings.redis)
    # A reservation outlives the longest call it can cover, then lapses by itself.
    app[LIMITS] = engine = LeasingEngine(
        pipe,
        reservation_lifetime=settings.proxy_timeout + 60,
        wait_replicas=settings.redis.wait_replicas,
        # WAIT gives up before the read times out.
        wait_ms=max(1, int(settings.redis.read_timeout * 800)),
        layout=Layout.of(settings.redis),
    )
    app[SETTLER] = settler = Settler(engine, app[METRICS].redis_errors)
    local = app[LOCAL_LIMITS]
    local.drain = lambda: settler.drain(within=max(1.0, settings.redis.read_timeout * 4))
    recorded = RecordedSpend(settings.postgres)
    if settings.redis_outage_mode == "local":
        local.recorded = recorded
    # Announcements go on a connection of their own, never between the request path's batches.
    heartbeat = open_pipe(settings.redis)
    replica = os.urandom(8).hex()
    tasks = [
        asyncio.create_task(settler.run(), name="settler"),
        asyncio.create_task(keep_announced(heartbeat, local, replica), name="announce"),
        asyncio.create_task(local.recover(engine), name="recover-limits"),
    ]
    app[ROUTE_CACHE] = ResponseCache(pipe, app[METRICS].redis_errors)
    yield
    await stop_task(tasks[2])
    await stop_task(tasks[1])
    with contextlib.suppress(Exception):  # the others stop counting this one at once
        await withdraw(heartbeat, replica)
    await heartbeat.close()
    await engine.close()  # the leases' budgets queued for release before the settler drains
    settler.close(within=DRAIN_TIMEOUT)
    try:
        await asyncio.wait_for(tasks[0], DRAIN_TIMEOUT + 5)
    except TimeoutError:
        log.error("settlement flusher did not stop in time")
    await recorded.close()
    await pipe.close()


async def keep_announced(heartbeat: Pipe, local: LocalLimits, replica: str) -> None:
    """Keep this replica announced, and the number of replicas up to date, while Redis answers."""
    while True:
        with contextlib.suppress(Exception):  # Redis away: the number last seen holds
            local.replicas_seen = await announce(heartbeat, replica, ANNOUNCE_TTL_MS)
        await asyncio.sleep(ANNOUNCE_INTERVAL)


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = create_session(app[SETTINGS])
    yield
    await app[SESSION].close()


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[REGISTRY].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def flush_call_log(app: web.Application) -> AsyncIterator[None]:
    yield
    app[CALL_LOG].flush()  # the lines of the last calls, should the loop not turn again


async def statsd_gauges(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]

    async def report() -> None:
        while True:
            registry.report_gauges()
            await asyncio.sleep(10)

    task = asyncio.create_task(report(), name="statsd-gauges") if registry.statsd else None
    yield
    if task is not None:
        await stop_task(task)
    registry.close()


def register_gauges(app: web.Application) -> None:
    registry, snapshot = app[REGISTRY], app[SNAPSHOT]
    registry.gauge("gateway_snapshot_keys", "Keys in the proxy's snapshot", lambda: len(snapshot))
    settings = app[PROVIDER_SETTINGS]
    registry.gauge(
        "gateway_snapshot_settings", "Provider settings the proxy holds", lambda: len(settings)
    )
    registry.gauge(
        "gateway_snapshot_age_seconds",
        "Seconds since the key snapshot was last refreshed",
        lambda: time.monotonic() - snapshot.refreshed_at if snapshot.loaded else -1,
    )
    registry.gauge(
        "gateway_settlement_queue_length",
        "Settlements waiting for Redis",
        lambda: len(app[SETTLER]) if SETTLER in app else 0,
    )


async def health(request: web.Request) -> web.Response:
    app = request.app
    snapshot = app[SNAPSHOT]
    if not (
        snapshot.loaded
        and app[PROVIDER_SETTINGS].loaded
        and app[POLICIES].loaded
        and app[USERS].loaded
    ):
        return json_response({"status": "starting", "keys": 0}, status=503)
    return json_response({"status": "ok", "keys": len(snapshot)})


# Where an OpenAI SDK's calls land when its base_url lacks the proxy's prefix.
SDK_PATHS = ("/v1/", "/chat/", "/completions", "/embeddings", "/responses", "/models")


async def unknown_route(request: web.Request) -> web.Response:
    path = request.path
    hint = f"an OpenAI SDK's base_url ends in {OPENAI_PREFIX}" if path.startswith(SDK_PATHS) else ""
    return not_found(path, hint).response(request_id_of(request))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.proxy_max_body_bytes)
    app[SETTINGS] = settings
    app[SNAPSHOT] = KeySnapshot()
    app[USERS] = UserSnapshot()
    app[PROVIDER_SETTINGS] = SettingSnapshot()
    app[ROUTES] = RouteSnapshot()
    app[POLICIES] = PolicySnapshot()
    app[COOL_DOWNS] = CoolDowns()
    app[PRICING] = Pricing.from_file(settings.pricing_file)
    app[LOCAL_LIMITS] = LocalLimits(
        settings.redis_outage_mode, settings.redis_outage_share, settings.redis_outage_max
    )
    app[REGISTRY] = Metrics(settings.statsd_address)
    app[METRICS] = ProxyMetrics.register(app[REGISTRY])
    app[CALL_LOG] = call_log(settings.log_format)
    app[TARGETS] = Targets(settings, app[PROVIDER_SETTINGS])
    register_gauges(app)
    tokens.seed_encodings()
    app.cleanup_ctx.append(flush_call_log)
    app.cleanup_ctx.append(statsd_gauges)
    app.cleanup_ctx.append(token_encodings)
    app.cleanup_ctx.append(limits)
    app.cleanup_ctx.append(upstream_session)
    app.cleanup_ctx.append(snapshots)
    app.cleanup_ctx.append(job_watcher)
    for provider in ADAPTERS:
        for path in provider.paths():
            app.router.add_route("*", path, handler_of(provider))
    app.router.add_post("/api/routes/{route_path:.+}", handle_route)
    app.router.add_get("/api/health", health)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_route("*", "/{tail:.*}", unknown_route)
    return app
