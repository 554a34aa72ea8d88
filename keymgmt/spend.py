"""Lifetime spend rebuilt in Redis from the usage events in Postgres, when Redis has lost it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import redis.asyncio as redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import usage_events
from shared.limits import SPEND_MARKER, spend_key

log = logging.getLogger("gateway.spend")


async def spend_by_key(engine: AsyncEngine, before: datetime | None = None) -> dict[str, int]:
    query = sa.select(usage_events.c.key_id, sa.func.sum(usage_events.c.cost_nano)).group_by(
        usage_events.c.key_id
    )
    if before is not None:
        query = query.where(usage_events.c.created_at < before)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {str(key_id): int(total) for key_id, total in rows if total}


async def restore_lost_spend(engine: AsyncEngine, client: redis.Redis) -> bool:
    """If Redis came back empty, add the spend it held before its restart; True if it did.

    Spend settled after the restart is already in Redis, so only events older than Redis's
    start are added. The marker is taken first, so that one keymgmt replica does it, once.
    """
    if await client.exists(SPEND_MARKER):
        return False
    info = await client.info("server")
    redis_started = datetime.fromtimestamp(time.time() - int(info["uptime_in_seconds"]), UTC)
    if not await client.set(SPEND_MARKER, str(info["run_id"]), nx=True):
        return False
    sums = await spend_by_key(engine, before=redis_started)
    async with client.pipeline(transaction=False) as pipe:
        for key_id, nano in sums.items():
            pipe.incrby(spend_key(key_id), nano)
        await pipe.execute()
    if sums:
        log.warning("redis had lost spend: restored it for %d keys from usage events", len(sums))
    return True


async def rebuild_all_spend(engine: AsyncEngine, client: redis.Redis) -> int:
    """Set every key's lifetime spend to the sum of its events (`python -m keymgmt rebuild-spend`).

    Run it with the proxies stopped, or accept that calls settling meanwhile may be counted
    twice or not at all.
    """
    sums = await spend_by_key(engine)
    async with client.pipeline(transaction=False) as pipe:
        for key_id, nano in sums.items():
            pipe.set(spend_key(key_id), nano)
        pipe.set(SPEND_MARKER, "rebuilt")
        await pipe.execute()
    return len(sums)
