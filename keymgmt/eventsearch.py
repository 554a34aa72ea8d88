"""`POST /api/v2/events`: usage events across keys, filtered, ordered by date or cost, in pages.

`actions` are what a PII policy did (`block`, `allow_but_redact`, `allow_but_warn`, `allow`): an
event of a key without a policy has none, and matches no such filter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from marshmallow import ValidationError, fields, validate, validates_schema

from keymgmt.listing import MAX_IDS, PageSchema, count_of, order, paged, text_list
from keymgmt.reporting import event_fields
from keymgmt.routes import load_body
from keymgmt.typedefs import STORE
from shared.db import keys, usage_events
from shared.jsonutil import json_response

routes = web.RouteTableDef()

MAX_UNIX_SECONDS = 1e11


def unix_seconds() -> fields.Float:
    return fields.Float(validate=validate.Range(0, MAX_UNIX_SECONDS, max_inclusive=False))


class EventQuerySchema(PageSchema):
    """Every filter given must hold; a list filter holds when any of its values matches."""

    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))
    tags = text_list()
    customIds = text_list(MAX_IDS)
    userIds = text_list(MAX_IDS)
    actions = text_list(MAX_IDS)
    start = unix_seconds()
    end = unix_seconds()
    status = fields.Integer(strict=True, validate=validate.Range(100, 599))
    costOrder = order()
    dateOrder = order()

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if "costOrder" in data and "dateOrder" in data:
            raise ValidationError("give costOrder or dateOrder, not both", "costOrder")
        if "start" in data and "end" in data and data["start"] >= data["end"]:
            raise ValidationError("must be before end", "start")


query_schema = EventQuerySchema()


def event_conditions(filters: dict[str, Any]) -> list[sa.ColumnElement[bool]]:
    e = usage_events.c
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.get("keyIds"):
        conditions.append(e.key_id.in_([str(key_id) for key_id in filters["keyIds"]]))
    if filters.get("tags"):
        conditions.append(keys.c.tags.overlap(sa.cast(filters["tags"], keys.c.tags.type)))
    if "start" in filters:
        conditions.append(e.created_at >= datetime.fromtimestamp(filters["start"], UTC))
    if "end" in filters:
        conditions.append(e.created_at < datetime.fromtimestamp(filters["end"], UTC))
    if "status" in filters:
        conditions.append(e.status == filters["status"])
    if filters.get("customIds"):
        conditions.append(e.custom_id.in_(filters["customIds"]))
    if filters.get("userIds"):
        conditions.append(e.user_id.in_(filters["userIds"]))
    if filters.get("actions"):
        conditions.append(e.policy_action.in_(filters["actions"]))
    return conditions


def logged_fields(row: Any) -> dict[str, Any]:
    """The bodies a key that logs them had stored with the event; absent for the others."""
    if row.request_content is None and row.response_content is None:
        return {}
    return {
        "requestContent": row.request_content,
        "requestTruncated": row.request_truncated,
        "responseContent": row.response_content,
        "responseTruncated": row.response_truncated,
    }


def event_query(filters: dict[str, Any]) -> sa.Select[Any]:
    e = usage_events.c
    ordering: tuple[sa.ColumnElement[Any], ...]
    if "costOrder" in filters:
        cost = e.cost_nano.desc() if filters["costOrder"] == "desc" else e.cost_nano
        ordering = (cost, e.created_at.desc(), e.event_id)
    elif filters.get("dateOrder") == "asc":
        ordering = (e.created_at, e.event_id)
    else:  # newest first unless asked otherwise
        ordering = (e.created_at.desc(), e.event_id.desc())
    return (
        sa.select(usage_events, keys.c.name.label("key_name"))
        .select_from(usage_events.outerjoin(keys, keys.c.key_id == e.key_id))
        .where(*event_conditions(filters))
        .order_by(*ordering)
    )


@routes.post("/api/v2/events")
async def search_events(request: web.Request) -> web.Response:
    filters = await load_body(request, query_schema)
    store = request.app[STORE]
    query = event_query(filters)
    rows = await store.fetch(paged(query, filters))
    events = [{**event_fields(row), **logged_fields(row), "keyName": row.key_name} for row in rows]
    total = await count_of(store, query) if filters["returnCount"] else None
    return json_response({"events": events, "count": total})
