"""The proxy application factory; the tests build the app with it too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.errors import not_found
from proxy.forward import PREFIX, handle
from proxy.snapshot import KeySnapshot, SnapshotRefresher
from proxy.typedefs import SESSION, SETTINGS, SNAPSHOT
from proxy.upstream import create_session
from shared.config import Settings
from shared.db import create_engine
from shared.jsonutil import json_response


async def key_snapshot(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = create_engine(settings.postgres, pool_size=1)
    refresher = SnapshotRefresher(engine, app[SNAPSHOT], settings.snapshot_interval)
    task = asyncio.create_task(refresher.run(), name="key-snapshot-refresher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await engine.dispose()


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
    app.cleanup_ctx.append(upstream_session)
    app.cleanup_ctx.append(key_snapshot)
    app.router.add_route("*", PREFIX + "/{tail:.*}", handle)
    app.router.add_get("/api/health", health)
    app.router.add_route("*", "/{tail:.*}", unknown_route)
    return app
