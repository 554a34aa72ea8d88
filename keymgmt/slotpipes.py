"""keymgmt's Redis in cluster mode: commands on many slots at once, each sent to the master
serving its slot.

keymgmt works on every slot's companions (its event stream, its spend marker), thousands of
commands of one slot each at a time. redis-py's cluster pipeline spends about 300 µs of CPU on
each of them; a RedisPipe per master spends 2 µs (measured over 300 streams). The cluster client
keeps the map of slots; a reply saying that a slot moved, or a master that is gone, refreshes it,
and the batch fails: its caller tries again, later, on the new map.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from shared.config import RedisSettings
from shared.limit_keys import Script
from shared.redisconn import create_redis
from shared.redispipe import Command, RedisPipe, RedisReplyError, RedisUnavailable

# A node's commands go in batches of at most this many, so that no batch outlasts the read
# timeout (a restore's scripts write a slot's keys each).
CHUNK = 2000
# Replies of a master that no longer serves the slot, or of a cluster that is changing.
MOVED = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "READONLY")

SlotCommand = tuple[int, Command]  # a command, and the slot of every key it names


class SlotPipes:
    """The cluster client's map of slots, and a RedisPipe to each master."""

    def __init__(self, client: RedisCluster, settings: RedisSettings) -> None:
        self.client = client
        self._settings = settings
        self._pipes: dict[str, RedisPipe] = {}
        self._refreshing = asyncio.Lock()

    async def replies(
        self, commands: Sequence[SlotCommand], scripts: Sequence[Script] = ()
    ) -> list[Any]:
        """The replies of `commands`, in their order, an error reply as a RedisReplyError in its
        place. Each node's batch first loads `scripts`, which the commands may call by sha."""
        by_node: dict[str, list[int]] = {}
        try:
            await self.client.initialize()
            manager = self.client.nodes_manager
            for index, (slot, _) in enumerate(commands):
                by_node.setdefault(manager.get_node_from_slot(slot).name, []).append(index)
        except RedisClusterException as error:  # no seed answers, or a slot has no master
            raise RedisUnavailable(str(error)) from None
        loads: list[Command] = [("SCRIPT", "LOAD", script.source) for script in scripts]
        replies: list[Any] = [None] * len(commands)

        async def send(node: str, indexes: list[int]) -> None:
            pipe = self._pipe(node)
            for start in range(0, len(indexes), CHUNK):
                chunk = indexes[start : start + CHUNK]
                got = await pipe.replies([*loads, *(commands[i][1] for i in chunk)])
                for reply in got[: len(loads)]:
                    if isinstance(reply, RedisReplyError):
                        raise reply
                for i, reply in zip(chunk, got[len(loads) :], strict=True):
                    replies[i] = reply

        try:
            await asyncio.gather(*(send(node, indexes) for node, indexes in by_node.items()))
        except OSError:  # RedisUnavailable and TimeoutError are: a master may be gone
            await self.refresh()
            raise
        if any(
            isinstance(reply, RedisReplyError) and str(reply).startswith(MOVED) for reply in replies
        ):
            await self.refresh()
            raise RedisUnavailable("the cluster's slots moved; the batch is to be sent again")
        return replies

    async def execute(
        self, commands: Sequence[SlotCommand], scripts: Sequence[Script] = ()
    ) -> list[Any]:
        """As `replies`, raising the first error reply."""
        replies = await self.replies(commands, scripts)
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return replies

    async def refresh(self) -> None:
        """Ask the cluster for its map again, and drop the pipes of nodes no longer masters."""
        async with self._refreshing:
            try:
                await self.client.nodes_manager.initialize()
            except RedisClusterException as error:
                raise RedisUnavailable(str(error)) from None
            masters = {node.name for node in self.client.get_primaries()}
            for name in [name for name in self._pipes if name not in masters]:
                await self._pipes.pop(name).close()

    def _pipe(self, node: str) -> RedisPipe:
        pipe = self._pipes.get(node)
        if pipe is None:
            host, _, port = node.rpartition(":")
            address = f"[{host}]:{port}" if ":" in host else node
            node_settings = replace(self._settings, mode="standalone", hosts=(address,), db=0)
            pipe = self._pipes[node] = RedisPipe(node_settings)
        return pipe

    async def aclose(self) -> None:
        for pipe in self._pipes.values():
            await pipe.close()
        self._pipes.clear()
        await self.client.aclose()


KeymgmtRedis = redis.Redis | SlotPipes


def connect(settings: RedisSettings, max_connections: int) -> KeymgmtRedis:
    """keymgmt's Redis: the client itself on one Redis; in a cluster, its slots' masters."""
    client = create_redis(settings, max_connections=max_connections)
    return SlotPipes(client, settings) if isinstance(client, RedisCluster) else client
