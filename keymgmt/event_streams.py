"""Where the usage-event consumer reads: the stream of a Redis.

Either way a read gives, stream by stream, the entries to write: first those this consumer read
before and did not acknowledge, then those a dead consumer left pending, then new ones. Once they
are written, `done` acknowledges them and trims each stream below the oldest entry not yet
written.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from shared.limit_keys import EVENTS_STREAM, SPEND_MARKER, Script

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
