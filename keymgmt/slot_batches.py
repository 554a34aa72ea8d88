"""keymgmt's Redis in cluster mode: batches of commands on many slots, over the cluster's pipe
(shared.clusterpipe), which sends each command to the master of its key's slot and follows the
cluster's redirects.

keymgmt works on every slot's companions (its event stream, its spend marker), thousands of
commands of one slot each at a time: redis-py's cluster pipeline spends about 300 µs of CPU on
each, the pipe a few. A batch goes CHUNK commands at a time, so that none outlasts the read
timeout (which bounds a batch whole), nor keeps another caller of the same connections (the
spend check and the event consumer run at once) waiting behind it for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from shared.clusterpipe import ClusterPipe
from shared.config import RedisSettings
from shared.limit_keys import Script
from shared.redisconn import create_redis
from shared.redispipe import Command, raise_first_error

CHUNK = 2000  # commands: about 700 on each master of three, a few ms of their time


class SlotBatches:
    """Batches of any size on a Redis Cluster. One of more than CHUNK commands goes as several,
    one after the other, each of every n-th command: keymgmt's come in slot order, and a master
    serves ranges of slots, so that a run of consecutive ones would keep one master alone busy.
    The commands of a batch must not depend on their order."""

    def __init__(self, settings: RedisSettings) -> None:
        self.pipe = ClusterPipe(settings)

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, in their order, an error reply as a RedisReplyError in its
        place; raises as ClusterPipe.replies when a batch as a whole failed."""
        return await self._send(commands, [])

    async def execute(self, commands: Sequence[Command], script: Script | None = None) -> list[Any]:
        """As `replies`, raising the first error reply. With `script`, each batch loads it first,
        on every master (SCRIPT goes to each), and `commands` call it by sha."""
        replies = await self._send(commands, [script.load] if script else [])
        raise_first_error(replies)
        return replies

    async def _send(self, commands: Sequence[Command], head: list[Command]) -> list[Any]:
        n = -(-len(commands) // CHUNK)  # batches
        replies: list[Any] = [None] * len(commands)
        for first in range(n):
            got = await self.pipe.replies([*head, *commands[first::n]])
            raise_first_error(got[: len(head)])
            replies[first::n] = got[len(head) :]
        return replies

    async def aclose(self) -> None:
        await self.pipe.close()


KeymgmtRedis = redis.Redis | SlotBatches


def connect(settings: RedisSettings, max_connections: int) -> KeymgmtRedis:
    """keymgmt's Redis: redis-py's client on one Redis (`max_connections` its pool's size), the
    slots' batches on a cluster."""
    if settings.mode == "cluster":
        return SlotBatches(settings)
    return create_redis(settings, max_connections=max_connections)
