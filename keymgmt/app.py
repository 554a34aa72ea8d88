"""The keymgmt application factory; the tests build the app with it too."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from keymgmt.middlewares import admin_middleware, error_middleware
from keymgmt.openapi import build_openapi
from keymgmt.routes import routes
from keymgmt.store import KeyStore
from keymgmt.typedefs import LIMITS, OPENAPI, SETTINGS, STORE
from shared.config import Settings
from shared.db import create_engine, migrate, wait_for_database
from shared.limits import LimitEngine
from shared.redisconn import create_redis

MAX_BODY_BYTES = 1024 * 1024


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = create_engine(settings.postgres)
    await wait_for_database(engine)
    await migrate(engine)
    app[STORE] = KeyStore(engine, settings.postgres)
    yield
    await engine.dispose()


async def limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_redis(settings.redis, max_connections=16)
    app[LIMITS] = LimitEngine(client, reservation_lifetime=settings.proxy_timeout + 60)
    yield
    await client.aclose()


def create_app(settings: Settings) -> web.Application:
    middlewares = [error_middleware]
    if settings.admin_pass:
        middlewares.append(admin_middleware(settings.admin_pass))
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[SETTINGS] = settings
    app[OPENAPI] = build_openapi(admin_pass_required=bool(settings.admin_pass))
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(limits)
    app.add_routes(routes)
    return app
