"""Where the usage-event consumer reads: the one stream of a Redis, or in a cluster the stream
of each slot in use.

Either way a read gives, stream by stream, the entries to write: first those this consumer read
before and did not acknowledge, then those a dead consumer left pending, then new ones. Once they
are written, `done` acknowledges them and trims each stream below the oldest entry not yet
written.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from keymgmt.slot_batches import SlotBatches
from shared.limit_keys import EVENTS_STREAM, SPEND_MARKER, Layout, Script
from shared.redispipe import RedisReplyError
from shared.slots import SLOTS, slot_tag

GROUP = "keymgmt"
BATCH = 500
Entry = tuple[bytes, dict[bytes, bytes]]
Read = list[tuple[str, list[Entry]]]  # entries by stream

# Trims below the oldest pending entry, or below the last acknowledged one when none is pending:
# every lower entry was delivered and acknowledged. Not while the spend marker is absent: the
# spend restore then needs the first entry of the stream (see keymgmt.spend).
TRIM = Script.of("""
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
return redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest or ARGV[2])
""")


def stream_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split(b"-")
    return int(milliseconds), int(sequence)


def last_of(entries: list[Entry]) -> bytes:
    return max((entry_id for entry_id, _ in entries), key=stream_order)


class OneStream:
    """The stream of one Redis (standalone, or the master of a sentinel set)."""

    def __init__(self, client: redis.Redis, consumer: str, claim_idle_ms: int) -> None:
        self._client = client
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._group_ready = False
        self._trim = client.register_script(TRIM.source)

    def reset(self) -> None:
        self._group_ready = False  # a restarted Redis has lost the group

    @staticmethod
    def entry_name(stream: str, entry_id: bytes) -> str:
        return entry_id.decode()  # one stream numbers all entries

    async def read(self, block_ms: int) -> Read:
        await self._ensure_group()
        entries = await self._read("0")
        if not entries:
            entries = await self._claim()
        if not entries:
            entries = await self._read(">", block_ms)
        return [(EVENTS_STREAM, entries)] if entries else []

    async def done(self, read: Read) -> None:
        for stream, entries in read:
            ids = [entry_id for entry_id, _ in entries]
            acknowledged = await self._client.xack(stream, GROUP, *ids)
            # Fewer acknowledged: this may not be the Redis they were read from (it restarted),
            # whose ids are no bound for the new stream's. The next batch trims.
            if acknowledged == len(ids):
                await self._trim(keys=[stream, SPEND_MARKER], args=[GROUP, last_of(entries)])

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(EVENTS_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def _read(self, start: str, block_ms: int = 0) -> list[Entry]:
        reply: Any = await self._client.xreadgroup(
            GROUP, self._consumer, {EVENTS_STREAM: start}, count=BATCH, block=block_ms or None
        )
        return [entry for _, entries in reply or () for entry in entries]

    async def _claim(self) -> list[Entry]:
        # Entries a dead consumer read but never acknowledged.
        reply = await self._client.xautoclaim(
            EVENTS_STREAM, GROUP, self._consumer, self._claim_idle_ms, start_id="0-0", count=BATCH
        )
        return list(reply[1])


# How often the slots are looked at for new streams, every stream is read (between looks, only
# those that had entries at their last read) and stale entries are claimed: a quiet stream's
# events wait this long at most. Looking at and reading all 16384 costs keymgmt about 120 ms.
LOOK_SECONDS = 2.0
# What one pass reads at most, shared by the streams: about this many, or one per stream.
PASS_ENTRIES = 4 * BATCH
CLUSTER = Layout(cluster=True)


@functools.cache
def stream_names() -> tuple[str, ...]:
    """The name of each slot's stream, by slot."""
    return tuple(CLUSTER.stream(slot_tag(slot)) for slot in range(SLOTS))


def _fields(raw: list[bytes] | None) -> dict[bytes, bytes]:
    return dict(zip(raw[::2], raw[1::2], strict=True)) if raw else {}


class SlotStreams:
    """The streams of a cluster, one per slot in use: each slot's settlements append to its own.

    Every LOOK_SECONDS the 16384 possible names are looked up (EXISTS, a few ms of each master;
    SCAN would cost a master with many keys far more), the group made on new streams, and all
    streams read; the passes between read those that had entries at their last read. A pass
    reads in one write per master (for each CHUNK of streams), and a stream whose last read
    filled its count gets a larger share of it. Nothing blocks: a pass that found nothing waits
    block_ms."""

    def __init__(self, pipes: SlotBatches, consumer: str, claim_idle_ms: int) -> None:
        self._pipes = pipes
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._streams: set[str] = set()  # those with the group
        self._active: set[str] = set()  # those that had entries at their last read
        self._behind: set[str] = set()  # those whose last read filled its count
        self._look_at = 0.0  # monotonic
        self._looked = self._claiming = False
        # Entries were read and not acknowledged (or a consumer of this name ran before): they
        # are pending, this consumer's, until read again from "0".
        self._unacknowledged = True

    def reset(self) -> None:
        self._look_at = 0.0  # a master that lost its data has lost the groups

    @staticmethod
    def entry_name(stream: str, entry_id: bytes) -> str:
        return f"{stream}/{entry_id.decode()}"  # each stream numbers its own entries

    async def read(self, block_ms: int) -> Read:
        if time.monotonic() >= self._look_at:
            await self._look()
            self._look_at = time.monotonic() + LOOK_SECONDS
            self._looked = self._claiming = True
        if self._unacknowledged:
            if read := await self._read(dict.fromkeys(self._streams, BATCH), "0"):
                return read
            self._unacknowledged = False
        if self._claiming:
            if read := await self._claim():
                self._unacknowledged = True
                return read
            self._claiming = False
        read = await self._read_new()
        if not read and block_ms:
            await asyncio.sleep(block_ms / 1000)
        self._unacknowledged = bool(read)
        return read

    async def done(self, read: Read) -> None:
        acks = await self._pipes.replies(
            [("XACK", name, GROUP, *(i for i, _ in entries)) for name, entries in read]
        )
        trims = []
        for (name, entries), acknowledged in zip(read, acks, strict=True):
            self._check(name, acknowledged)
            if acknowledged == len(entries):  # else the stream's master lost it: see OneStream
                keys = [name, CLUSTER.marker(name)]
                trims.append(TRIM.call(keys, [GROUP, last_of(entries)]))
        await self._pipes.execute(trims, script=TRIM)
        self._unacknowledged = False

    async def _look(self) -> None:
        names = stream_names()
        found = await self._pipes.execute([("EXISTS", name) for name in names])
        present = {name for name, exists in zip(names, found, strict=True) if exists}
        new = [name for name in present if name not in self._streams]
        made = await self._pipes.replies([("XGROUP", "CREATE", name, GROUP, "0") for name in new])
        for name, reply in zip(new, made, strict=True):
            if isinstance(reply, RedisReplyError) and "BUSYGROUP" not in str(reply):
                present.discard(name)  # gone again meanwhile: the next look finds it if back
        self._streams = present

    async def _read_new(self) -> Read:
        names = self._streams if self._looked else self._active & self._streams
        self._looked = False
        base = self._share()
        more = min(BATCH, max(base, PASS_ENTRIES // max(1, len(self._behind))))
        counts = {name: more if name in self._behind else base for name in names}
        read = await self._read(counts, ">")
        self._active = {name for name, _ in read}
        self._behind = {name for name, entries in read if len(entries) >= counts[name]}
        return read

    async def _read(self, counts: dict[str, int], start: str) -> Read:
        head = ("XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT")
        names = list(counts)
        replies = await self._pipes.replies(
            [(*head, counts[n], "STREAMS", n, start) for n in names]
        )
        # A stream's reply: none, or [[stream, entries]].
        return self._entries(names, replies, lambda reply: reply[0][1] if reply else ())

    async def _claim(self) -> Read:
        # Entries a dead consumer read but never acknowledged.
        tail = (GROUP, self._consumer, self._claim_idle_ms, "0-0", "COUNT", self._share())
        names = list(self._streams)
        replies = await self._pipes.replies([("XAUTOCLAIM", n, *tail) for n in names])
        return self._entries(names, replies, lambda reply: reply[1])  # [cursor, entries, gone]

    def _entries(self, names: list[str], replies: list[Any], of: Callable[[Any], Any]) -> Read:
        read = []
        for name, reply in zip(names, replies, strict=True):
            if self._check(name, reply) and (entries := of(reply)):
                read.append((name, [(entry_id, _fields(raw)) for entry_id, raw in entries]))
        return read

    def _share(self) -> int:
        return max(1, PASS_ENTRIES // max(1, len(self._streams)))

    def _check(self, name: str, reply: Any) -> bool:
        """Whether a stream's reply is one; a stream whose group is gone (its master lost its
        data) is looked up again."""
        if not isinstance(reply, RedisReplyError):
            return True
        if not str(reply).startswith("NOGROUP"):
            raise reply
        self._streams.discard(name)
        self._look_at = 0.0
        return False
