"""Reporting: a key's spend, its events by time range, usage per hour or day, top keys."""

from __future__ import annotations

import base64
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from keymgmt.errors import InvalidInput, LimitsUnavailable
from keymgmt.routes import key_id_of
from keymgmt.typedefs import LIMITS, STORE
from shared.db import keys, usage_events
from shared.jsonutil import json_response
from shared.limit_keys import to_usd
from shared.redispipe import RedisReplyError

routes = web.RouteTableDef()

DAY = 86400
GRANULARITIES = {"hour": 3600, "day": DAY}


def _time(request: web.Request, name: str, default: float) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        return datetime.fromtimestamp(default, UTC)
    try:
        seconds = float(raw)
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            raise ValueError
    except ValueError:
        raise InvalidInput({name: ["must be unix seconds"]}) from None
    return datetime.fromtimestamp(seconds, UTC)


def _range(request: web.Request, default_span: float) -> tuple[datetime, datetime]:
    end = _time(request, "end", time.time())
    start = _time(request, "start", end.timestamp() - default_span)
    if start >= end:
        raise InvalidInput({"start": ["must be before end"]})
    return start, end


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidInput({"limit": [f"must be an integer from 1 to {maximum}"]})
    return int(raw)


def event_fields(row: Any) -> dict[str, Any]:
    fields = {
        "eventId": row.event_id,
        "requestId": row.request_id,
        "keyId": row.key_id,
        "model": row.model,
        "path": row.path,
        "provider": row.provider,
        "settingId": row.setting_id,
        "status": row.status,
        "promptTokens": row.prompt_tokens,
        "completionTokens": row.completion_tokens,
        "cachedTokens": row.cached_tokens,
        "costInUsd": to_usd(row.cost_nano),
        "latencyMs": row.latency_ms,
        "upstreamMs": row.upstream_ms,
        "streamed": row.streamed,
        "createdAt": int(row.created_at.timestamp()),
        "policyId": row.policy_id,
        "policyAction": row.policy_action,
        "policyCounts": row.policy_counts,
        "customId": row.custom_id,
        "userId": row.user_id,
        "metadata": row.metadata,
    }
    if row.route_id:  # a route's call
        fields.update(
            routeId=row.route_id,
            routeStep=row.route_step,
            routeAttempt=row.route_attempt,
            cacheHit=row.cache_hit,
            savedCostInUsd=to_usd(row.saved_cost_nano),
        )
    return fields


def _cursor(row: Any) -> str:
    # ISO time keeps the microseconds exactly, so no event is skipped or repeated across pages.
    text = f"{row.created_at.isoformat()}|{row.event_id}"
    return base64.urlsafe_b64encode(text.encode()).decode()


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        moment, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(moment), str(uuid.UUID(event_id))
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidInput({"cursor": ["not a cursor from a previous page"]}) from None


@routes.get("/api/reporting/keys/{key_id}")
async def key_spend(request: web.Request) -> web.Response:
    key = await request.app[STORE].get(key_id_of(request))
    try:
        usage = await request.app[LIMITS].usage(key)
    except (RedisReplyError, OSError):
        raise LimitsUnavailable("redis unavailable: spend cannot be read now") from None
    return json_response(
        {
            "keyId": key.key_id,
            "costInUsd": usage.cost_usd,
            "costInUsdOverTime": usage.cost_usd_in_window,
            "costLimitInUsdUnit": key.cost_limit_in_usd_unit,
            "requestsInWindow": usage.requests_in_window,
            "rateLimitUnit": key.rate_limit_unit,
        }
    )


@routes.get("/api/reporting/keys/{key_id}/events")
async def key_events(request: web.Request) -> web.Response:
    """Events in [start, end), oldest first, a page at a time; `next` fetches the next page."""
    key_id = key_id_of(request)
    start, end = _range(request, DAY)
    limit = _limit(request, 100, 1000)
    e = usage_events.c
    query = (
        usage_events.select()
        .where(e.key_id == key_id, e.created_at >= start, e.created_at < end)
        .order_by(e.created_at, e.event_id)
        .limit(limit + 1)
    )
    if "cursor" in request.query:
        moment, event_id = _after(request.query["cursor"])
        after = sa.tuple_(
            sa.literal(moment, type_=e.created_at.type), sa.literal(event_id, type_=e.event_id.type)
        )
        query = query.where(sa.tuple_(e.created_at, e.event_id) > after)
    rows = await request.app[STORE].fetch(query)
    page = rows[:limit]
    next_cursor = _cursor(page[-1]) if len(rows) > limit else None
    return json_response(
        {"keyId": key_id, "events": [event_fields(r) for r in page], "next": next_cursor}
    )


@routes.get("/api/reporting/keys/{key_id}/usage")
async def key_usage(request: web.Request) -> web.Response:
    """Spend, requests, tokens and latency percentiles per hour or per day."""
    key_id = key_id_of(request)
    granularity = request.query.get("granularity", "hour")
    if granularity not in GRANULARITIES:
        raise InvalidInput({"granularity": ["must be hour or day"]})
    start, end = _range(request, 7 * DAY)
    e = usage_events.c
    bucket = sa.func.date_trunc(granularity, e.created_at, "UTC").label("bucket")  # UTC days
    latency = e.latency_ms
    query = (
        sa.select(
            bucket,
            sa.func.count().label("requests"),
            sa.func.count().filter(e.status >= 400).label("errors"),
            sa.func.sum(e.cost_nano).label("cost_nano"),
            sa.func.sum(e.prompt_tokens).label("prompt_tokens"),
            sa.func.sum(e.completion_tokens).label("completion_tokens"),
            sa.func.percentile_cont(0.5).within_group(latency).label("p50"),
            sa.func.percentile_cont(0.99).within_group(latency).label("p99"),
        )
        .where(e.key_id == key_id, e.created_at >= start, e.created_at < end)
        .group_by(bucket)
        .order_by(bucket)
    )
    rows = await request.app[STORE].fetch(query)
    buckets = [
        {
            "start": int(row.bucket.timestamp()),
            "requests": row.requests,
            "errors": row.errors,
            "costInUsd": to_usd(int(row.cost_nano or 0)),
            "promptTokens": int(row.prompt_tokens or 0),
            "completionTokens": int(row.completion_tokens or 0),
            "latencyP50Ms": row.p50,
            "latencyP99Ms": row.p99,
        }
        for row in rows
    ]
    return json_response({"keyId": key_id, "granularity": granularity, "buckets": buckets})


@routes.get("/api/reporting/top-keys")
async def top_keys(request: web.Request) -> web.Response:
    start, end = _range(request, 30 * DAY)
    limit = _limit(request, 10, 1000)
    e = usage_events.c
    spend = sa.func.sum(e.cost_nano).label("cost_nano")
    query = (
        sa.select(e.key_id, keys.c.name, spend, sa.func.count().label("requests"))
        .join(keys, keys.c.key_id == e.key_id)
        .where(e.created_at >= start, e.created_at < end)
        .group_by(e.key_id, keys.c.name)
        .order_by(spend.desc(), e.key_id)
        .limit(limit)
    )
    rows = await request.app[STORE].fetch(query)
    return json_response(
        [
            {
                "keyId": r.key_id,
                "name": r.name,
                "costInUsd": to_usd(int(r.cost_nano)),
                "requests": r.requests,
            }
            for r in rows
        ]
    )
