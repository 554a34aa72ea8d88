"""Spend rebuilt in Redis from Postgres, when Redis has lost it.

An event reaches the stream in the same script call as its charge. The events recorded before
the first entry of a restarted Redis's stream (or before the restore began, if it has none) are
the charges that Redis lost; later ones it holds already. That cutoff is kept in Redis from the
first try, and the consumer does not trim the stream until the marker is back, so every try of
one restore agrees on it. Lifetime spend comes from the per-key totals, the current windows from
the events of the last window. One keymgmt replica restores at a time (a lock that expires if it
dies), and everything is written, marker last, in one script call, only while it holds the lock:
until then no proxy trusts the counters, and a restore that failed has written nothing and is
tried again.

In a cluster all of that holds slot by slot: each slot has its marker, stream, cutoff and lock
(shared.limit_keys.Layout), a restore gives the slots without a marker the spend of the keys
whose counters they hold, from each slot's own cutoff, and slots without keys get their marker
too. The 16384 markers are checked in a few batches, one write per master each: tens of ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import LockError
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.slot_batches import KeymgmtRedis, SlotBatches
from keymgmt.spend_totals import SpendPlan, read_plan
from shared.limit_keys import (
    EVENTS_STREAM,
    SPEND_MARKER,
    SPEND_RESTORE_CUTOFF,
    SPEND_RESTORE_LOCK,
    Layout,
    Script,
    spend_key,
)
from shared.slots import SLOTS, slot_of, slot_tag

log = logging.getLogger("gateway.spend")

LOCK_SECONDS = 120  # far above a restore's few bounded queries
CLUSTER = Layout(cluster=True)

# Returns {cutoff ms, now ms}, by Redis's clock. KEYS: 1 cutoff, 2 event stream.
CUTOFF = Script.of("""
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local cutoff = redis.call('GET', KEYS[1])
if not cutoff then
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  cutoff = first and string.match(first[1], '^%d+') or string.format('%d', now)
  redis.call('SET', KEYS[1], cutoff)
end
return {tonumber(cutoff), now}
""")

# Writes a plan and sets the marker, if the lock is still this writer's; 1 if it did.
# KEYS: 1 marker, 2 lock, 3 cutoff, then S lifetime spend keys, then the window hashes.
# ARGV: 1 lock token, 2 marker value ("restored": add to what is there, unless the marker is
# back already; "rebuilt": replace it), 3 S, then S amounts, then for each hash its ttl ms, its
# number of buckets B and B bucket/value pairs.
APPLY = Script.of("""
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local replace = ARGV[2] == 'rebuilt'
if not replace and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local spends = tonumber(ARGV[3])
for i = 1, spends do
  if replace then redis.call('SET', KEYS[3 + i], ARGV[3 + i])
  else redis.call('INCRBY', KEYS[3 + i], ARGV[3 + i]) end
end
local a = 4 + spends
for k = 4 + spends, #KEYS do
  local buckets = tonumber(ARGV[a + 1])
  if replace then redis.call('DEL', KEYS[k]) end
  for b = 1, buckets do
    redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * b], ARGV[a + 2 * b + 1])
  end
  redis.call('PEXPIRE', KEYS[k], ARGV[a])
  a = a + 2 + 2 * buckets
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
""")
# A slot's lock released, if it is still this holder's. KEYS: 1 lock; ARGV: 1 token.
UNLOCK = Script.of("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


async def restore_lost_spend(engine: AsyncEngine, client: KeymgmtRedis) -> bool:
    """If Redis came back empty, give it the spend it held before; True if this call did."""
    if isinstance(client, SlotBatches):
        return await _restore_slots(engine, client)
    if await client.exists(SPEND_MARKER):
        return False
    token = os.urandom(16).hex()
    lock = client.lock(SPEND_RESTORE_LOCK, timeout=LOCK_SECONDS, blocking=False)
    if not await lock.acquire(token=token):
        return False  # another replica is restoring
    try:
        cutoff_ms, now_ms = await client.register_script(CUTOFF.source)(
            keys=[SPEND_RESTORE_CUTOFF, EVENTS_STREAM]
        )
        plan = await read_plan(engine, lambda _: int(cutoff_ms), int(now_ms))
        restored = await _apply(client, plan, token, "restored")
    finally:
        with contextlib.suppress(LockError):  # it expired: the apply refused to write
            await lock.release()
    if restored and plan.spend:
        log.warning("redis had lost spend: restored it for %d keys", len(plan.spend))
    return restored


async def rebuild_all_spend(engine: AsyncEngine, client: KeymgmtRedis) -> int:
    """Set every key's spend and current windows from Postgres (`python -m keymgmt rebuild-spend`).

    Run it with the proxies stopped, or accept that calls settling meanwhile may be counted
    twice or not at all. Returns the number of keys with spend.
    """
    if isinstance(client, SlotBatches):
        return await _rebuild_slots(engine, client)
    token = os.urandom(16).hex()
    lock = client.lock(SPEND_RESTORE_LOCK, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
    if not await lock.acquire(token=token):
        raise RuntimeError("a spend restore holds the lock; try again")
    try:
        seconds, micros = await client.time()
        plan = await read_plan(engine, None, seconds * 1000 + micros // 1000)
        await _apply(client, plan, token, "rebuilt")
    finally:
        with contextlib.suppress(LockError):
            await lock.release()
    return len(plan.spend)


def _apply_call(
    layout: Layout, tag: str, plan: SpendPlan, token: str, marker: str
) -> tuple[list[str], list[Any]]:
    """APPLY's keys and arguments for a plan, with the companions of `tag`'s slot."""
    keys = [layout.marker(tag), layout.restore_lock(tag), layout.restore_cutoff(tag)]
    keys += [*plan.spend, *plan.windows]
    args: list[Any] = [token, marker, len(plan.spend), *plan.spend.values()]
    for window in plan.windows.values():
        args += [window.ttl_ms, len(window.buckets)]
        for bucket, value in window.buckets.items():
            args += [bucket, value]
    return keys, args


async def _apply(client: redis.Redis, plan: SpendPlan, token: str, marker: str) -> bool:
    keys, args = _apply_call(Layout(), "", plan, token, marker)
    return bool(await client.register_script(APPLY.source)(keys=keys, args=args))


async def _restore_slots(engine: AsyncEngine, pipes: SlotBatches) -> bool:
    present = await pipes.execute([("EXISTS", CLUSTER.marker(slot_tag(s))) for s in range(SLOTS)])
    lost = [slot for slot in range(SLOTS) if not present[slot]]
    if not lost:
        return False
    token = os.urandom(16).hex()
    slots = await _lock(pipes, lost, token)  # the others: another replica is restoring them
    if not slots:
        return False
    try:
        tags = [slot_tag(slot) for slot in slots]
        cutoffs = await pipes.execute(
            [CUTOFF.call([CLUSTER.restore_cutoff(tag), CLUSTER.stream(tag)], []) for tag in tags],
            script=CUTOFF,
        )
        cutoff_ms = {slot: int(reply[0]) for slot, reply in zip(slots, cutoffs, strict=True)}
        now_ms = max(int(reply[1]) for reply in cutoffs)  # the masters' clocks, about alike
        plan = await read_plan(
            engine, lambda key_id: cutoff_ms.get(slot_of(spend_key(key_id))), now_ms
        )
        restored = await _apply_slots(pipes, plan, token, "restored", slots)
    finally:
        await _unlock(pipes, slots, token)
    if restored and plan.spend:
        log.warning(
            "redis had lost spend in %d slots: restored it for %d keys", restored, len(plan.spend)
        )
    return restored > 0


async def _rebuild_slots(engine: AsyncEngine, pipes: SlotBatches) -> int:
    token = os.urandom(16).hex()
    held: set[int] = set()
    deadline = time.monotonic() + LOCK_SECONDS
    try:
        while len(held) < SLOTS:
            held.update(await _lock(pipes, [s for s in range(SLOTS) if s not in held], token))
            if len(held) < SLOTS:
                if time.monotonic() > deadline:
                    raise RuntimeError("a spend restore holds the lock; try again")
                await asyncio.sleep(0.1)
        ((seconds, micros),) = await pipes.execute([("TIME",)])
        plan = await read_plan(engine, None, int(seconds) * 1000 + int(micros) // 1000)
        await _apply_slots(pipes, plan, token, "rebuilt", range(SLOTS))
    finally:
        await _unlock(pipes, sorted(held), token)
    return len(plan.spend)


async def _apply_slots(
    pipes: SlotBatches, plan: SpendPlan, token: str, marker: str, slots: Iterable[int]
) -> int:
    """The plan applied slot by slot, each slot's marker set; the number of slots it applied."""
    by_slot: dict[int, SpendPlan] = {}
    for name, amount in plan.spend.items():
        by_slot.setdefault(slot_of(name), SpendPlan()).spend[name] = amount
    for name, window in plan.windows.items():
        by_slot.setdefault(slot_of(name), SpendPlan()).windows[name] = window
    commands = []
    for slot in slots:
        keys, args = _apply_call(
            CLUSTER, slot_tag(slot), by_slot.get(slot, SpendPlan()), token, marker
        )
        commands.append(APPLY.call(keys, args))
    return sum(await pipes.execute(commands, script=APPLY))


async def _lock(pipes: SlotBatches, slots: list[int], token: str) -> list[int]:
    """The slots whose restore lock this call took."""
    replies = await pipes.execute(
        [("SET", CLUSTER.restore_lock(slot_tag(s)), token, "NX", "EX", LOCK_SECONDS) for s in slots]
    )
    return [slot for slot, reply in zip(slots, replies, strict=True) if reply is not None]


async def _unlock(pipes: SlotBatches, slots: list[int], token: str) -> None:
    commands = [UNLOCK.call([CLUSTER.restore_lock(slot_tag(s))], [token]) for s in slots]
    with contextlib.suppress(OSError):  # unreachable: the locks expire
        await pipes.execute(commands, script=UNLOCK)
