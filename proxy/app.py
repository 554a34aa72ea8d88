"""The proxy application factory; the tests build the app with it too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.errors import not_found
from proxy.forward import PREFIX, handle
from proxy.settlement import Settler
from proxy.snapshot import KeySnapshot, SnapshotRefresher
from proxy.typedefs import LIMITS, PRICING, SESSION, SETTINGS, SETTLER, SNAPSHOT
from proxy.upstream import create_session
from shared import tokens
from shared.config import Settings
from shared.db import create_engine
from shared.jsonutil import json_response
from shared.limits import LimitEngine
from shared.pricing import Pricing
from shared.redisconn import create_redis

# How long a graceful stop waits for queued spend to reach Redis.
DRAIN_TIMEOUT = 10.0


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def key_snapshot(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = create_engine(settings.postgres, pool_size=1)
    refresher = SnapshotRefresher(engine, app[SNAPSHOT], settings.snapshot_interval)
    task = asyncio.create_task(refresher.run(), name="key-snapshot-refresher")
    yield
    await _stop(task)
    await engine.dispose()


async def limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_redis(settings.redis)
    # A reservation outlives the longest call it can cover, then lapses by itself.
    app[LIMITS] = engine = LimitEngine(client, reservation_lifetime=settings.proxy_timeout + 60)
    app[SETTLER] = settler = Settler(engine)
    task = asyncio.create_task(settler.run(), name="settler")
    yield
    await _stop(task)
    await settler.drain(DRAIN_TIMEOUT)
    await client.aclose()


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = create_session(app[SETTINGS])
    yield
    await app[SESSION].close()


async def health(request: web.Request) -> web.Response:
    snapshot = request.app[SNAPSHOT]
    if not snapshot.loaded:
        return json_response({"status": "starting", "keys": 0}, status=503)
    return json_response({"status": "ok", "keys": len(snapshot)})


async def unknown_route(request: web.Request) -> web.Response:
    return not_found(request.path).response(request.headers.get("X-Request-Id", ""))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.proxy_max_body_bytes)
    app[SETTINGS] = settings
    app[SNAPSHOT] = KeySnapshot()
    app[PRICING] = Pricing.from_file(settings.pricing_file)
    tokens.seed_encodings()
    app.cleanup_ctx.append(limits)
    app.cleanup_ctx.append(upstream_session)
    app.cleanup_ctx.append(key_snapshot)
    app.router.add_route("*", PREFIX + "/{tail:.*}", handle)
    app.router.add_get("/api/health", health)
    app.router.add_route("*", "/{tail:.*}", unknown_route)
    return app
