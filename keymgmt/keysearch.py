"""`POST /api/v2/key-management/keys`: keys filtered by ids, tags, name and state, in pages."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web
from marshmallow import fields, validate

from keymgmt.listing import MAX_IDS, PageSchema, count_of, order, paged, text, text_list
from keymgmt.routes import key_schema, load_body
from keymgmt.typedefs import STORE
from shared.db import key_from_row, keys
from shared.jsonutil import json_response
from shared.schemas import StrictBoolean

routes = web.RouteTableDef()


class KeyQuerySchema(PageSchema):
    """Every filter given must hold; a list filter holds when any of its values matches."""

    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))
    tags = text_list()
    name = text()
    revoked = StrictBoolean(allow_none=True)
    order = order()


query_schema = KeyQuerySchema()


def key_query(filters: dict[str, Any]) -> sa.Select[Any]:
    k = keys.c
    conditions: list[sa.ColumnElement[bool]] = [k.deleted_at.is_(None)]
    if filters.get("keyIds"):
        conditions.append(k.key_id.in_([str(key_id) for key_id in filters["keyIds"]]))
    if filters.get("tags"):
        conditions.append(k.tags.overlap(sa.cast(filters["tags"], k.tags.type)))
    if filters.get("name"):
        conditions.append(k.name.icontains(filters["name"], autoescape=True))
    if filters.get("revoked") is not None:
        conditions.append(k.revoked.is_(filters["revoked"]))
    newest_first = filters.get("order") == "desc"
    by_time = (k.created_at.desc(), k.key_id.desc()) if newest_first else (k.created_at, k.key_id)
    return keys.select().where(*conditions).order_by(*by_time)


@routes.post("/api/v2/key-management/keys")
async def search_keys(request: web.Request) -> web.Response:
    filters = await load_body(request, query_schema)
    store = request.app[STORE]
    query = key_query(filters)
    rows = await store.fetch(paged(query, filters))
    found = key_schema.dump([key_from_row(row) for row in rows], many=True)
    total = await count_of(store, query) if filters["returnCount"] else None
    return json_response({"keys": found, "count": total})
