"""Handlers of the key-management API."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError

from keymgmt.errors import InvalidInput, KeyNotFound
from keymgmt.typedefs import OPENAPI, STORE
from shared.jsonutil import json_response
from shared.schemas import MAX_TAGS, CreateKeySchema, KeySchema, UpdateKeySchema

KEYS_PATH = "/api/key-management/keys"

create_schema = CreateKeySchema()
update_schema = UpdateKeySchema()
key_schema = KeySchema()

routes = web.RouteTableDef()


async def load_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"malformed JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        return schema.load(body)
    except ValidationError as error:
        raise InvalidInput(error.normalized_messages()) from None


def key_id_of(request: web.Request) -> str:
    raw = request.match_info["key_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise KeyNotFound(f"no key with id {raw!r}") from None


@routes.put(KEYS_PATH)
async def create_key(request: web.Request) -> web.Response:
    fields = await load_body(request, create_schema)
    key = await request.app[STORE].create(fields)
    return json_response(key_schema.dump(key))


@routes.get(KEYS_PATH)
async def find_keys(request: web.Request) -> web.Response:
    query = request.query
    tags = query.getall("tag", []) + query.getall("tags", [])
    raw_ids = query.getall("keyIds", []) + query.getall("keyId", [])
    if not tags and not raw_ids:
        raise InvalidInput("give at least one tag, tags or keyIds query parameter")
    if len(tags) > MAX_TAGS or len(raw_ids) > 1000:
        raise InvalidInput(f"at most {MAX_TAGS} tags and 1000 keyIds per query")
    if any("\x00" in tag for tag in tags):
        raise InvalidInput("tags must not contain NUL characters")
    try:
        key_ids = [str(uuid.UUID(raw)) for raw in raw_ids]
    except ValueError:
        raise InvalidInput("keyIds must be UUIDs") from None
    found = await request.app[STORE].find(tags, key_ids)
    return json_response(key_schema.dump(found, many=True))


@routes.get(KEYS_PATH + "/{key_id}")
async def get_key(request: web.Request) -> web.Response:
    key = await request.app[STORE].get(key_id_of(request))
    return json_response(key_schema.dump(key))


@routes.patch(KEYS_PATH + "/{key_id}")
async def update_key(request: web.Request) -> web.Response:
    key_id = key_id_of(request)
    fields = await load_body(request, update_schema)
    key = await request.app[STORE].update(key_id, fields)
    return json_response(key_schema.dump(key))


@routes.delete(KEYS_PATH + "/{key_id}")
async def delete_key(request: web.Request) -> web.Response:
    await request.app[STORE].delete(key_id_of(request))
    return web.Response(status=204)


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    postgres_up = await request.app[STORE].ping()
    body = {"status": "ok" if postgres_up else "degraded", "postgres": postgres_up}
    return json_response(body, status=200 if postgres_up else 503)


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
