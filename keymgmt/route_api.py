"""Handlers of the routes API."""

from __future__ import annotations

import uuid

from aiohttp import web

from keymgmt.errors import RouteNotFound
from keymgmt.routes import load_body
from keymgmt.typedefs import ROUTE_STORE
from shared.jsonutil import json_response
from shared.route_schemas import CreateRouteSchema, RouteSchema, UpdateRouteSchema

ROUTES_PATH = "/api/routes"

create_schema = CreateRouteSchema()
update_schema = UpdateRouteSchema()
route_schema = RouteSchema()

route_api = web.RouteTableDef()


def route_id_of(request: web.Request) -> str:
    raw = request.match_info["route_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise RouteNotFound(f"no route with id {raw!r}") from None


@route_api.post(ROUTES_PATH)
async def create_route(request: web.Request) -> web.Response:
    fields = await load_body(request, create_schema)
    return json_response(route_schema.dump(await request.app[ROUTE_STORE].create(fields)))


@route_api.get(ROUTES_PATH)
async def list_routes(request: web.Request) -> web.Response:
    return json_response(route_schema.dump(await request.app[ROUTE_STORE].all(), many=True))


@route_api.get(ROUTES_PATH + "/{route_id}")
async def get_route(request: web.Request) -> web.Response:
    route = await request.app[ROUTE_STORE].get(route_id_of(request))
    return json_response(route_schema.dump(route))


@route_api.patch(ROUTES_PATH + "/{route_id}")
async def update_route(request: web.Request) -> web.Response:
    route_id = route_id_of(request)
    fields = await load_body(request, update_schema)
    return json_response(route_schema.dump(await request.app[ROUTE_STORE].update(route_id, fields)))


@route_api.delete(ROUTES_PATH + "/{route_id}")
async def delete_route(request: web.Request) -> web.Response:
    await request.app[ROUTE_STORE].delete(route_id_of(request))
    return web.Response(status=204)
