"""What Postgres recorded of each key's spend, read for a restore in one consistent snapshot.

Every read is bounded by the number of keys or by the events of the last window, never by all
the events: lifetime spend comes from the per-key totals (key_spend).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keymgmt.event_rows import redis_time
from shared.db import (
    EVENT_WRITE_LOCK,
    key_from_row,
    key_spend,
    keys,
    usage_events,
    usage_events_rejected,
)
from shared.limit_keys import WINDOW_BUCKETS, KeyNames, rate_key, spend_key
from shared.models import UNIT_SECONDS, Key


@dataclass
class Window:
    """One bucketed window hash (cost or requests), as the limit scripts keep it."""

    ttl_ms: int
    buckets: dict[int, int] = field(default_factory=dict)


@dataclass
class SpendPlan:
    """What to write to Redis: lifetime spend by Redis key, and window hashes by Redis key."""

    spend: dict[str, int] = field(default_factory=dict)
    windows: dict[str, Window] = field(default_factory=dict)


# Since when (ms, by Redis's clock) the Redis holding a key's counters has its charges, by key
# id: one time for every key of one Redis; in a cluster, its slot's, or None for a key whose slot
# did not lose its data.
Cutoff = Callable[[str], int | None]


async def read_plan(engine: AsyncEngine, cutoff: Cutoff | None, now_ms: int) -> SpendPlan:
    """The spend Redis should be given.

    With a cutoff (a restore): what was charged into Redis before it, which a Redis that came
    back empty lost, for the keys it names. Without (a rebuild): all of it, for every key.
    """
    async with engine.connect() as connection:
        try:
            # Taken before the snapshot's transaction: its snapshot then sees every event write
            # that was in flight when the restore began.
            await connection.execute(sa.select(sa.func.pg_advisory_lock(EVENT_WRITE_LOCK)))
            await connection.commit()
            snapshot = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with snapshot.begin():
                plan = SpendPlan(await _lifetime(snapshot, cutoff))
                windowed = await _windowed_keys(snapshot)
                if cutoff is not None:
                    windowed = [key for key in windowed if cutoff(key.key_id) is not None]
                await _add_windows(snapshot, plan, windowed, cutoff, now_ms)
            await connection.execute(sa.select(sa.func.pg_advisory_unlock(EVENT_WRITE_LOCK)))
            await connection.commit()
        except BaseException:
            await connection.invalidate()  # closing the connection surely releases the lock
            raise
    return plan


async def _lifetime(connection: AsyncConnection, cutoff: Cutoff | None) -> dict[str, int]:
    totals = {
        str(key_id): int(cost)
        for key_id, cost in await connection.execute(
            sa.select(key_spend.c.key_id, key_spend.c.cost_nano)
        )
    }
    if cutoff is not None:
        since = {key_id: ms for key_id in totals if (ms := cutoff(key_id)) is not None}
        totals = {key_id: totals[key_id] for key_id in since}
        if since:
            for key_id, cost in await connection.execute(_since(since)):
                # Charged into the restarted Redis: it holds them already.
                totals[str(key_id)] -= int(cost)
    return {spend_key(key_id): cost for key_id, cost in totals.items() if cost > 0}


def _bounds(name: str, times_ms: Mapping[str, int]) -> sa.TableValuedAlias:
    """Rows (key_id, at) of a time for each key: a bound that differs by key, in one query."""
    ids = sa.bindparam(f"{name}_ids", list(times_ms), type_=ARRAY(UUID(as_uuid=False)))
    times = sa.bindparam(
        f"{name}_times",
        [redis_time(ms) for ms in times_ms.values()],
        type_=ARRAY(sa.DateTime(timezone=True)),
    )
    columns = (sa.column("key_id", UUID(as_uuid=False)), sa.column("at", sa.DateTime(True)))
    return sa.func.unnest(ids, times).table_valued(*columns).render_derived(name)


def _since(since: Mapping[str, int]) -> sa.Select[str, int]:
    """Each key's charges recorded since its cutoff, rejected events' too."""
    bounds = _bounds("since", since)
    earliest = redis_time(min(since.values()))  # the index's range; each key's bound on top

    def charges(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.Select[str, int]:
        return (
            sa.select(table.c.key_id, table.c.cost_nano)
            .join(bounds, table.c.key_id == bounds.c.key_id)
            .where(table.c.recorded_at >= earliest, table.c.recorded_at >= bounds.c.at, *where)
        )

    recorded = sa.union_all(
        charges(usage_events),
        charges(usage_events_rejected, usage_events_rejected.c.cost_nano.is_not(None)),
    ).subquery()
    return sa.select(recorded.c.key_id, sa.func.sum(recorded.c.cost_nano)).group_by(
        recorded.c.key_id
    )


async def _windowed_keys(connection: AsyncConnection) -> list[Key]:
    query = keys.select().where(
        keys.c.deleted_at.is_(None),
        sa.or_(
            keys.c.cost_limit_in_usd_over_time > 0,
            keys.c.rate_limit_over_time > 0,
            keys.c.rate_limits != sa.cast("[]", keys.c.rate_limits.type),
        ),
    )
    return [key_from_row(row) for row in await connection.execute(query)]


def rate_units(key: Key) -> set[str]:
    units = {unit for _, unit in key.rate_limits}
    if key.rate_limit_over_time:
        units.add(key.rate_limit_unit)
    return units


async def _add_windows(
    connection: AsyncConnection,
    plan: SpendPlan,
    windowed: list[Key],
    cutoff: Cutoff | None,
    now_ms: int,
) -> None:
    # Charges after the cutoff are in the restarted Redis's buckets already; admissions are
    # counted there only once the marker is set, so every event of the rate window counts.
    def cost_until(key_id: str) -> int:
        at = None if cutoff is None else cutoff(key_id)
        return now_ms + 1 if at is None else at

    for seconds in sorted(set(UNIT_SECONDS.values())):
        cost = {
            key.key_id: KeyNames.of(key).window_spend
            for key in windowed
            if key.cost_limit_in_usd_over_time and key.cost_window_seconds == seconds
        }
        rate = {  # every rate window of the unit, the first or one of rateLimits
            key.key_id: rate_key(key.key_id, unit)
            for key in windowed
            for unit in rate_units(key)
            if UNIT_SECONDS[unit] == seconds
        }
        until = {key_id: cost_until(key_id) for key_id in cost}
        await _add(connection, plan, cost, seconds * 1000, (now_ms, until), sa.func.sum)
        until = dict.fromkeys(rate, now_ms + 1)
        await _add(connection, plan, rate, seconds * 1000, (now_ms, until), sa.func.count)


async def _add(
    connection: AsyncConnection,
    plan: SpendPlan,
    names: dict[str, str],
    window_ms: int,
    now_and_until_ms: tuple[int, Mapping[str, int]],
    aggregate: Callable[[sa.ColumnElement[int]], sa.ColumnElement[int]],
) -> None:
    """The buckets of one window length for the keys in `names` (key id: Redis hash name), of
    the events of the window before each key's `until`."""
    if not names:
        return
    now_ms, until_ms = now_and_until_ms
    width = window_ms / WINDOW_BUCKETS
    # As the scripts compute it from Redis's clock in ms: floor(ms / width), in floating point.
    epoch_ms = sa.cast(sa.extract("epoch", usage_events.c.recorded_at) * 1000, sa.Double)
    bucket = sa.func.floor(epoch_ms / width)
    until = _bounds("until", until_ms)
    query = (
        sa.select(usage_events.c.key_id, bucket, aggregate(usage_events.c.cost_nano))
        .join(until, usage_events.c.key_id == until.c.key_id)
        .where(
            usage_events.c.recorded_at >= redis_time(int(now_ms - window_ms - width)),
            usage_events.c.recorded_at < redis_time(max(until_ms.values())),
            usage_events.c.recorded_at < until.c.at,
        )
        .group_by(usage_events.c.key_id, bucket)
    )
    ttl_ms = window_ms + math.ceil(width)  # as the scripts set it
    for key_id, index, total in await connection.execute(query):
        if total:
            window = plan.windows.setdefault(names[str(key_id)], Window(ttl_ms))
            window.buckets[int(index)] = int(total)
