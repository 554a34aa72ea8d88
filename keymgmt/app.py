"""The keymgmt application factory; the tests build the app with it too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from keymgmt import gateway_reporting, policies, reporting, users
from keymgmt.console import add_console
from keymgmt.events import EventConsumer
from keymgmt.middlewares import admin_middleware, error_middleware
from keymgmt.openapi import build_openapi
from keymgmt.route_api import route_api
from keymgmt.route_store import RouteStore
from keymgmt.routes import routes
from keymgmt.setting_routes import routes as setting_routes
from keymgmt.settings_store import SettingStore
from keymgmt.slot_batches import connect
from keymgmt.spend import restore_lost_spend
from keymgmt.store import KeyStore
from keymgmt.typedefs import (
    ENGINE,
    EVENTS_WRITTEN,
    LIMITS,
    OPENAPI,
    REDIS,
    REGISTRY,
    REQUESTS,
    ROUTE_STORE,
    SETTING_STORE,
    SETTINGS,
    STORE,
)
from shared.clusterpipe import open_pipe
from shared.config import Settings
from shared.db_engine import create_engine, migrate, wait_for_database
from shared.limit_keys import Layout
from shared.limits import LimitEngine
from shared.metrics import Metrics
from shared.pg import describe
from shared.runtime import raise_if_cancelled, stop_task
from shared.secrets import SecretBox

MAX_BODY_BYTES = 1024 * 1024
MAX_REQUEST_LINE = 64 * 1024
SPEND_CHECK_INTERVAL = 5.0
log = logging.getLogger("gateway.keymgmt")


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = create_engine(settings.postgres)
    await wait_for_database(engine)
    await migrate(engine)
    app[ENGINE] = engine
    app[STORE] = KeyStore(engine, settings.postgres)
    key = settings.settings_encryption_key
    app[SETTING_STORE] = SettingStore(engine, settings.postgres, SecretBox(key) if key else None)
    app[ROUTE_STORE] = RouteStore(engine, settings.postgres)
    yield
    await engine.dispose()


async def limits(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[REDIS] = client = connect(settings.redis, max_connections=16)
    pipe = open_pipe(settings.redis)
    app[LIMITS] = LimitEngine(
        pipe, reservation_lifetime=settings.proxy_timeout + 60, layout=Layout.of(settings.redis)
    )
    yield
    await pipe.close()
    await client.aclose()


async def _forever(step: Callable[[], Awaitable[object]], interval: float, what: str) -> None:
    while True:
        raise_if_cancelled()
        try:
            await step()
        except Exception as error:  # Redis or Postgres away: try again next time
            raise_if_cancelled()
            log.warning("%s failed: %s", what, describe(error))
        await asyncio.sleep(interval)


async def background(app: web.Application) -> AsyncIterator[None]:
    """The usage-event consumer, and the watch for a Redis that lost its spend."""
    client, engine = app[REDIS], app[ENGINE]
    block_ms = max(50, int(app[SETTINGS].redis.read_timeout * 500))
    consumer = EventConsumer(client, engine, app[EVENTS_WRITTEN], block_ms=block_ms)
    tasks = [
        asyncio.create_task(consumer.run(), name="usage-events"),
        asyncio.create_task(
            _forever(
                lambda: restore_lost_spend(engine, client), SPEND_CHECK_INTERVAL, "spend check"
            ),
            name="spend-check",
        ),
    ]
    yield
    for task in tasks:
        await stop_task(task)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    route = request.match_info.route.resource
    request.app[REQUESTS].inc(
        route=route.canonical if route is not None else "unmatched",
        method=request.method,
        status=str(response.status),
    )
    return response


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[REGISTRY].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_app(settings: Settings) -> web.Application:
    middlewares = [count_requests, error_middleware]
    if settings.admin_pass:
        middlewares.append(admin_middleware(settings.admin_pass))
    # A query of many ids is refused in the problem shape (each endpoint bounds its ids), not by
    # the HTTP parser's 8 KB line limit in plain text.
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=middlewares,
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[SETTINGS] = settings
    app[OPENAPI] = build_openapi(admin_pass_required=bool(settings.admin_pass))
    app[REGISTRY] = registry = Metrics(settings.statsd_address)
    app[REQUESTS] = registry.counter(
        "gateway_keymgmt_requests_total", "Admin API requests", ("route", "method", "status")
    )
    app[EVENTS_WRITTEN] = registry.counter(
        "gateway_usage_events_written_total", "Usage events written to Postgres"
    )
    app.cleanup_ctx.extend([database, limits, background])
    app.add_routes(routes)
    app.add_routes(setting_routes)
    app.add_routes(route_api)
    app.add_routes(reporting.routes)
    app.add_routes(policies.routes)
    app.add_routes(users.routes)
    app.add_routes(gateway_reporting.routes)
    app.router.add_get("/metrics", metrics_endpoint)
    add_console(app)
    return app
