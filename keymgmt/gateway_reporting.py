"""The original gateway's events and reporting endpoints, over the project's usage_events.

Their request fields, answer shapes and field names are the original's, so that scripts written
for it keep working: `GET /api/events` answers events in the original's event shape (snake_case),
the reporting endpoints `dataPoints`. Tags match as everywhere in this API: an event matches when
its key has any of the tags given.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from keymgmt.errors import InvalidInput
from keymgmt.eventsearch import event_conditions, unix_seconds
from keymgmt.listing import MAX_IDS, PageSchema, order, text, text_list
from keymgmt.routes import load_body
from keymgmt.typedefs import STORE
from shared.db import keys, usage_events
from shared.jsonutil import json_response
from shared.limit_keys import to_usd
from shared.schemas import StrictBoolean

routes = web.RouteTableDef()

MAX_EVENTS = 10_000  # GET /api/events answers at most this many, oldest first
MAX_DATA_POINTS = 10_000  # (end - start) / increment
MAX_INCREMENT = 100 * 365 * 86400
GROUPS = {"model": "model", "keyId": "key_id", "customId": "custom_id", "userId": "user_id"}
e = usage_events.c


def original_event(row: Any) -> dict[str, Any]:
    """An event as the original gateway returns it."""
    return {
        "id": row.event_id,
        "created_at": int(row.created_at.timestamp()),
        "tags": list(row.tags or ()),
        "key_id": row.key_id,
        "cost_in_usd": to_usd(row.cost_nano),
        "provider": row.provider,
        "model": row.model,
        "status": row.status,
        "prompt_token_count": row.prompt_tokens,
        "completion_token_count": row.completion_tokens,
        "latency_in_ms": round(row.latency_ms),
        "path": row.path,
        "method": "POST",
        "custom_id": row.custom_id or "",
        "request": row.request_content,
        "response": row.response_content,
        "userId": row.user_id or "",
        "action": "",
        "policyId": "",
        "routeId": row.route_id,
        "correlationId": row.request_id,
        "metadata": row.metadata,
    }


def _unix(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput({name: ["must be unix seconds"]}) from None
    if not 0 <= seconds < 1e11:
        raise InvalidInput({name: ["must be unix seconds"]})
    return seconds


@routes.get("/api/events")
async def events(request: web.Request) -> web.Response:
    """Events of keyIds (with start and end), and/or of one customId, and/or of one userId."""
    query = request.query
    raw_ids = query.getall("keyIds", [])
    custom_id, user_id = query.get("customId", ""), query.get("userId", "")
    if not (raw_ids or custom_id or user_id):
        raise InvalidInput("give keyIds, customId or userId")
    filters: dict[str, Any] = {}
    try:
        filters["keyIds"] = [uuid.UUID(raw) for raw in raw_ids[:MAX_IDS]]
    except ValueError:
        raise InvalidInput({"keyIds": ["must be UUIDs"]}) from None
    for name in ("start", "end"):
        if name in query:
            filters[name] = _unix(query[name], name)
    if raw_ids and not ("start" in filters and "end" in filters):
        raise InvalidInput("keyIds need start and end")
    if custom_id:
        filters["customIds"] = [custom_id]
    if user_id:
        filters["userIds"] = [user_id]
    statement = (
        sa.select(usage_events, keys.c.tags)
        .select_from(usage_events.outerjoin(keys, keys.c.key_id == e.key_id))
        .where(*event_conditions(filters))
        .order_by(e.created_at, e.event_id)
        .limit(MAX_EVENTS)
    )
    rows = await request.app[STORE].fetch(statement)
    return json_response([original_event(row) for row in rows])


class _Range(Schema):
    class Meta:
        unknown = RAISE

    start = unix_seconds()
    end = unix_seconds()

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if "start" in data and "end" in data and data["start"] >= data["end"]:
            raise ValidationError("must be before end", "start")


class ReportingSchema(_Range):
    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))
    tags = text_list()
    customIds = text_list(MAX_IDS)
    userIds = text_list(MAX_IDS)
    increment = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=MAX_INCREMENT)
    )
    filters = fields.List(fields.String(validate=validate.OneOf(tuple(GROUPS))))

    @validates_schema
    def _bounded(self, data: dict[str, Any], **_: Any) -> None:
        if "start" not in data or "end" not in data:
            raise ValidationError("start and end are required", "start")
        if (data["end"] - data["start"]) / data["increment"] > MAX_DATA_POINTS:
            raise ValidationError(f"at most {MAX_DATA_POINTS} increments a query", "increment")


class ByDaySchema(_Range):
    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))

    @validates_schema
    def _required(self, data: dict[str, Any], **_: Any) -> None:
        if "start" not in data or "end" not in data:
            raise ValidationError("start and end are required", "start")


class TopKeysSchema(PageSchema):
    start = unix_seconds()
    end = unix_seconds()
    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))
    tags = text_list()
    name = text()
    revoked = StrictBoolean(allow_none=True)
    order = order()


reporting_schema, by_day_schema, top_keys_schema = ReportingSchema(), ByDaySchema(), TopKeysSchema()


def _sums() -> list[sa.ColumnElement[Any]]:
    return [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(e.cost_nano), 0).label("cost_nano"),
        sa.func.coalesce(sa.func.sum(e.latency_ms), 0).label("latency_ms"),
        sa.func.coalesce(sa.func.sum(e.prompt_tokens), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(e.completion_tokens), 0).label("completion_tokens"),
        sa.func.count().filter(e.status == 200).label("successes"),
    ]


def _data_point(row: Any | None, stamp: int) -> dict[str, Any]:
    """A data point of the sums of `row` (_sums), or of nothing."""
    return {
        "timeStamp": stamp,
        "numberOfRequests": int(row.requests) if row else 0,
        "costInUsd": to_usd(int(row.cost_nano)) if row else 0.0,
        "latencyInMs": round(row.latency_ms) if row else 0,
        "promptTokenCount": int(row.prompt_tokens) if row else 0,
        "completionTokenCount": int(row.completion_tokens) if row else 0,
        "successCount": int(row.successes) if row else 0,
        "model": "",
        "keyId": "",
        "customId": "",
        "userId": "",
    }


def _joined(statement: sa.Select[Any], filters: dict[str, Any]) -> sa.Select[Any]:
    if filters.get("tags"):  # the key's tags, as in POST /api/v2/events
        return statement.select_from(usage_events.join(keys, keys.c.key_id == e.key_id))
    return statement.select_from(usage_events)


@routes.post("/api/reporting/events")
async def event_reporting(request: web.Request) -> web.Response:
    """Requests, cost, latency and tokens per `increment` seconds from `start`, split by the
    `filters` named (model, keyId, customId, userId); every increment has a point."""
    body = await load_body(request, reporting_schema)
    start, increment = int(body["start"]), body["increment"]
    conditions = event_conditions(body)
    epoch = sa.extract("epoch", e.created_at)
    first, step = sa.literal(start, sa.BigInteger), sa.literal(increment, sa.BigInteger)
    bucket = (first + sa.func.floor((epoch - first) / step) * step).label("bucket")
    split_by = list(dict.fromkeys(body.get("filters") or []))
    groups = [getattr(e, GROUPS[name]).label(name) for name in split_by]
    statement = _joined(sa.select(bucket, *groups, *_sums()), body).where(*conditions)
    statement = statement.group_by(bucket, *groups).order_by(bucket, *groups)
    store = request.app[STORE]
    rows = await store.fetch(statement)
    points = []
    for row in rows:
        point = _data_point(row, int(row.bucket))
        for name in split_by:
            point[name] = getattr(row, name) or ""
        points.append(point)
    seen = {point["timeStamp"] for point in points}
    points += [
        _data_point(None, stamp)
        for stamp in range(start, int(body["end"]), increment)
        if stamp not in seen
    ]
    points.sort(key=lambda point: point["timeStamp"])
    latency = sa.select(
        sa.func.coalesce(sa.func.percentile_cont(0.5).within_group(e.latency_ms), 0),
        sa.func.coalesce(sa.func.percentile_cont(0.99).within_group(e.latency_ms), 0),
    )
    [(median, top)] = await store.fetch(_joined(latency, body).where(*conditions))
    return json_response(
        {"dataPoints": points, "latencyInMsMedian": median, "latencyInMs99th": top}
    )


@routes.post("/api/reporting/events-by-day")
async def events_by_day(request: web.Request) -> web.Response:
    """Per UTC day and key: requests, cost, latency and tokens."""
    body = await load_body(request, by_day_schema)
    day = sa.func.date_trunc("day", e.created_at, "UTC").label("day")
    statement = (
        sa.select(day, e.key_id, *_sums())
        .where(*event_conditions(body))
        .group_by(day, e.key_id)
        .order_by(day, e.key_id)
    )
    rows = await request.app[STORE].fetch(statement)
    points = [{**_data_point(row, int(row.day.timestamp())), "keyId": row.key_id} for row in rows]
    return json_response({"dataPoints": points})


@routes.post("/api/reporting/top-keys")
async def top_keys(request: web.Request) -> web.Response:
    """Keys (live, matching the filters) by their spend in [start, end), 0 for none."""
    body = await load_body(request, top_keys_schema)
    k = keys.c
    spend_conditions = [e.key_id == k.key_id]
    if "start" in body:
        spend_conditions.append(e.created_at >= datetime.fromtimestamp(body["start"], UTC))
    if "end" in body:
        spend_conditions.append(e.created_at < datetime.fromtimestamp(body["end"], UTC))
    spend = (
        sa.select(sa.func.coalesce(sa.func.sum(e.cost_nano), 0))
        .where(*spend_conditions)
        .scalar_subquery()
        .label("cost_nano")
    )
    conditions: list[sa.ColumnElement[bool]] = [k.deleted_at.is_(None)]
    if body.get("keyIds"):
        conditions.append(k.key_id.in_([str(key_id) for key_id in body["keyIds"]]))
    if body.get("tags"):
        conditions.append(k.tags.overlap(sa.cast(body["tags"], k.tags.type)))
    if body.get("name"):
        conditions.append(k.name.icontains(body["name"], autoescape=True))
    if body.get("revoked") is not None:
        conditions.append(k.revoked.is_(body["revoked"]))
    ordered = spend.asc() if body.get("order") == "asc" else spend.desc()
    statement = (
        sa.select(k.key_id, spend)
        .where(*conditions)
        .order_by(ordered, k.key_id)
        .limit(body["limit"])
        .offset(body["offset"])
    )
    rows = await request.app[STORE].fetch(statement)
    points = [{"keyId": row.key_id, "costInUsd": to_usd(int(row.cost_nano))} for row in rows]
    return json_response({"dataPoints": points})


def _key_id_query(request: web.Request) -> str:
    raw = request.query.get("keyId", "")
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput({"keyId": ["a key id (UUID) is required"]}) from None


async def _distinct(request: web.Request, column: sa.Column[Any]) -> web.Response:
    key_id = _key_id_query(request)
    statement = (
        sa.select(column)
        .where(e.key_id == key_id, column.isnot(None), column != "")
        .distinct()
        .order_by(column)
        .limit(MAX_EVENTS)
    )
    rows = await request.app[STORE].fetch(statement)
    return json_response([row[0] for row in rows])


@routes.get("/api/reporting/user-ids")
async def user_ids(request: web.Request) -> web.Response:
    return await _distinct(request, usage_events.c.user_id)


@routes.get("/api/reporting/custom-ids")
async def custom_ids(request: web.Request) -> web.Response:
    return await _distinct(request, usage_events.c.custom_id)
