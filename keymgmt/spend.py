"""Lifetime spend rebuilt in Redis from the usage events in Postgres, when Redis has lost it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import usage_events
from shared.limits import EVENTS_STREAM, SPEND_MARKER, spend_key

log = logging.getLogger("gateway.spend")


async def spend_by_key(engine: AsyncEngine, before: datetime | None = None) -> dict[str, int]:
    """Spend per key from the events; with `before`, only what reached Redis before that time."""
    query = sa.select(usage_events.c.key_id, sa.func.sum(usage_events.c.cost_nano)).group_by(
        usage_events.c.key_id
    )
    if before is not None:
        query = query.where(usage_events.c.recorded_at < before)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {str(key_id): int(total) for key_id, total in rows if total}


async def restore_lost_spend(engine: AsyncEngine, client: redis.Redis) -> bool:
    """If Redis came back empty, add the spend it held before; True if it did.

    An event reaches the stream in the same script call as its charge. The events recorded before
    the first entry of the new stream (or before now, if it has none yet) are the charges the
    restarted Redis lost; later ones it holds already. The marker is taken first, so that one
    keymgmt replica does this, once.
    """
    if await client.exists(SPEND_MARKER):
        return False
    if not await client.set(SPEND_MARKER, "restored", nx=True):
        return False
    first: Any = await client.xrange(EVENTS_STREAM, count=1)
    if first:
        cutoff_ms = int(first[0][0].split(b"-")[0])
    else:
        seconds, micros = await client.time()
        cutoff_ms = seconds * 1000 + micros // 1000
    sums = await spend_by_key(engine, before=datetime.fromtimestamp(cutoff_ms / 1000, UTC))
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
