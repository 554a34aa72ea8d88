"""The limit engine's connection to a Redis Cluster: a pipelined connection per master.

Each command goes to the master of its first key's slot, as CLUSTER SLOTS maps them. A keyless
command goes with the keyed command before it (or the first one), so that a batch may say
[script on slot A, WAIT, script on slot B, WAIT]; SCRIPT goes to every master. A batch is split
per master, the parts written at once, one write each, and the replies put back in order. A
batch on one master, the common case, costs what it costs RedisPipe plus finding the slot.

MOVED and ASK are followed, TRYAGAIN and CLUSTERDOWN tried again until the read timeout. A
command that was never written (its master refused the connection) is sent again once the map
is read anew; one written whose reply was lost is not, as with RedisPipe: the batch fails with
RedisUnavailable, and callers send it again under the same idempotent ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from shared.config import RedisSettings
from shared.redispipe import (
    Command,
    Pipe,
    RedisPipe,
    RedisReplyError,
    RedisUnavailable,
    _Connection,
    raise_first_error,
    tls_context,
)
from shared.slotmap import Node, SlotMap
from shared.slots import first_key, slot_of, word_of

MAX_REDIRECTS = 5  # MOVED or ASK for one command, or tries of a node that refused it
RETRY_PAUSE = 0.05  # before a command the cluster could not serve (TRYAGAIN, CLUSTERDOWN) again
_SLOT_CACHE = 100_000  # keys whose slot is remembered; past that the memory starts afresh
_RETRIED = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")
_ASKING: Command = ("ASKING",)


def _everywhere(name: str | int | bytes) -> bool:
    """Whether a command of no key goes to every master: SCRIPT (LOAD, FLUSH) does."""
    return word_of(name) == "SCRIPT"


def _retried(replies: list[Any]) -> bool:
    for reply in replies:
        if isinstance(reply, RedisReplyError) and str(reply).startswith(_RETRIED):
            return True
    return False


_EVERY = Node("every master", 0)  # the target of SCRIPT


class ClusterPipe:
    """Sends batches of commands to a Redis Cluster and returns their replies in order; reads the
    slot map from the seeds (the first that answers) on first use."""

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._map = SlotMap(settings, tls_context(settings))
        self._slots: dict[object, int] = {}  # of keys seen

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, one write per master; raises the first error reply."""
        replies = await self.replies(commands)
        raise_first_error(replies)
        return replies

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, one write per master, an error reply as a RedisReplyError
        in its place; raises only when the batch as a whole failed (RedisUnavailable: some of it
        may have run), or TimeoutError past the read timeout, which bounds the whole batch."""
        timeout = self._settings.read_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        sent: list[_Connection] = []
        try:
            async with asyncio.timeout_at(deadline):
                return await self._replies(commands, deadline, sent)
        except TimeoutError:
            # As RedisPipe: only a master silent all this while is given up on.
            for connection in sent:
                if time.monotonic() - connection.last_received >= timeout:
                    connection.abort()
            raise TimeoutError(f"Redis did not answer within {timeout}s") from None

    async def _replies(
        self, commands: Sequence[Command], deadline: float, sent: list[_Connection]
    ) -> list[Any]:
        if not self._map.route:
            await self._map.refresh(self._map.version)
        seen = self._map.version
        targets, only = self._plan(commands)
        if only is not None and (connection := only.connection) is not None and connection.open:
            sent.append(connection)
            replies = await connection.send(commands)
            if not _retried(replies):
                return replies
            spread = _Spread(self, commands, targets, deadline, sent)
            spread.take(only, range(len(commands)), set(), replies)
            await spread.after_round(seen, {}, {})
            return await spread.run()
        return await _Spread(self, commands, targets, deadline, sent).run()

    def _plan(self, commands: Sequence[Command]) -> tuple[list[Node], Node | None]:
        """Each command's node (_EVERY for SCRIPT), and the only node of them all, if one."""
        route, slots = self._map.route, self._slots
        targets: list[Node | None] = []
        current: Node | None = None  # the node of the last keyed command
        first: Node | None = None
        mixed = False
        for command in commands:
            key = first_key(command)
            if key is None:
                if _everywhere(command[0]):
                    targets.append(_EVERY)
                    mixed = True
                else:
                    targets.append(current)  # None before the first keyed command: filled below
                continue
            slot = slots.get(key)
            if slot is None:
                slot = self._slot(key)
            node = route[slot]
            if node is not current:
                current = node
                if first is None:
                    first = node
                elif node is not first:
                    mixed = True
            targets.append(node)
        fill = first or self._map.masters[0]
        placed = [fill if t is None else t for t in targets] if None in targets else targets
        return placed, None if mixed else fill  # type: ignore[return-value]  # no None left

    def _slot(self, key: object) -> int:
        if len(self._slots) >= _SLOT_CACHE:
            self._slots.clear()
        slot = slot_of(key if isinstance(key, str | bytes) else str(key))
        self._slots[key] = slot
        return slot

    async def close(self) -> None:
        self._map.close()


class _Spread:
    """A batch that needs more than one write: sent in rounds, each round the commands still due
    grouped per node, until each has its reply. A keyless command sent again with the keyed one
    before it, when that one was redirected: a WAIT must follow its script."""

    def __init__(
        self,
        pipe: ClusterPipe,
        commands: Sequence[Command],
        targets: list[Node],
        deadline: float,
        sent: list[_Connection],
    ) -> None:
        self.pipe, self.map, self.commands, self.targets = pipe, pipe._map, commands, targets
        self.deadline, self.sent = deadline, sent
        self.out: list[Any] = [None] * len(commands)
        self.due: list[int] = list(range(len(commands)))
        self.redirected: dict[int, Node] = {}  # by MOVED or ASK, to that node
        self.asking: set[int] = set()  # the next round sends ASKING before these
        self.tries = [0] * len(commands)
        self.keyed: list[bool] | None = None  # of each command; known once needed
        self.again: set[int] = set()  # of this round
        self.moved: dict[int, Node] = {}  # slot → its new master, of this round
        self.pause = False
        self.first = self.map.masters[0]

    async def run(self) -> list[Any]:
        while self.due:
            seen = self.map.version
            groups: dict[Node, list[int]] = {}
            self.first = self.map.masters[0]  # whose reply to SCRIPT is the reply
            for i in self.due:
                target = self.targets[i]
                for node in self.map.masters if target is _EVERY else (target,):
                    groups.setdefault(node, []).append(i)
            refused = await self.connect([node for node in groups if not node.open])
            asking, self.asking = self.asking, set()
            futures = []
            for node, indexes in groups.items():
                connection = node.connection
                if node in refused or connection is None or not connection.open:
                    refused.setdefault(node, f"connection to Redis at {node.host} lost")
                    continue
                part: list[Command] = []
                for i in indexes:
                    if i in asking:
                        part.append(_ASKING)
                    part.append(self.commands[i])
                self.sent.append(connection)
                futures.append((node, indexes, connection.send(part)))
            lost: RedisUnavailable | None = None
            try:
                for node, indexes, future in futures:
                    try:
                        replies = await future
                    except RedisUnavailable as error:  # written: it may have run
                        lost = error
                        continue
                    self.take(node, indexes, asking, replies)
            finally:
                for *_, future in futures:
                    future.cancel()  # a part given up on keeps its place on its connection
            if lost is not None:
                raise lost
            await self.after_round(seen, groups, refused)
        return self.out

    async def connect(self, nodes: list[Node]) -> dict[Node, str]:
        """Open connections to `nodes` at once; those that cannot be opened, and why."""
        refused: dict[Node, str] = {}
        opened = await asyncio.gather(*map(self.map.connect, nodes), return_exceptions=True)
        for node, result in zip(nodes, opened, strict=True):
            if isinstance(result, RedisUnavailable):
                refused[node] = str(result)
            elif isinstance(result, BaseException):
                raise result
        return refused

    def take(
        self, node: Node, indexes: Sequence[int], asking: set[int], replies: list[Any]
    ) -> None:
        each = iter(replies)
        for i in indexes:
            if i in asking:
                next(each)  # ASKING's OK
            reply = next(each)
            if self.targets[i] is _EVERY:  # the first master's reply, or an error of any
                error = isinstance(reply, RedisReplyError)
                if error or (node is self.first and not isinstance(self.out[i], RedisReplyError)):
                    self.out[i] = reply
            elif i not in self.again:  # else a keyless one going again with its keyed one
                if self.redirect(i, node, reply):
                    self.again.add(i)
                    self.again.update(self.followers(i))
                else:
                    self.out[i] = reply

    def redirect(self, i: int, node: Node, reply: Any) -> bool:
        """Whether command `i` goes again, as its reply says."""
        if not isinstance(reply, RedisReplyError):
            return False
        message = str(reply)
        if message.startswith(("MOVED ", "ASK ")):
            if self.tries[i] >= MAX_REDIRECTS:
                return False
            self.tries[i] += 1
            kind, slot, address = message.split(" ", 2)
            host, _, port = address.rpartition(":")
            to = self.map.node(host or node.host, int(port))  # no host: the one asked
            self.redirected[i] = to
            if kind == "ASK":
                self.asking.add(i)
            else:
                self.moved[int(slot)] = to
            return True
        if message.startswith(("TRYAGAIN", "CLUSTERDOWN")):
            if asyncio.get_running_loop().time() + RETRY_PAUSE >= self.deadline:
                return False
            self.redirected.pop(i, None)  # from the start: the slot's master, as mapped
            self.pause = True
            return True
        return False

    def followers(self, i: int) -> list[int]:
        """The keyless commands after keyed command `i`, up to the next keyed one."""
        if self.keyed is None:
            self.keyed = [first_key(command) is not None for command in self.commands]
        found = []
        for j in range(i + 1, len(self.commands)):
            if self.keyed[j]:
                break
            if self.targets[j] is not _EVERY:
                found.append(j)
        return found

    async def after_round(
        self, seen: int, groups: dict[Node, list[int]], refused: dict[Node, str]
    ) -> None:
        """Read the map again where a round found it wrong, and set the commands due next."""
        unwritten = sorted({i for node in refused for i in groups[node]})
        if self.moved or refused:
            await self.map.refresh(seen)
            for slot, node in self.moved.items():
                self.map.moved(slot, node)
        for i in unwritten:
            if self.redirected.get(i) in refused:
                del self.redirected[i]
        if unwritten or self.again:
            self.targets = self.retarget()
        for i in unwritten:
            target = self.targets[i]
            dead = target in refused or (
                target is _EVERY and any(m in refused for m in self.map.masters)
            )
            if dead or self.tries[i] >= MAX_REDIRECTS:
                raise RedisUnavailable("; ".join(refused.values()))
            self.tries[i] += 1
            self.out[i] = None
        self.due = sorted(self.again.union(unwritten))
        self.again, self.moved = set(), {}
        if self.pause:
            self.pause = False
            await asyncio.sleep(RETRY_PAUSE)

    def retarget(self) -> list[Node]:
        """Each command's node by the map as it is now, and where a redirect sent it."""
        targets, _ = self.pipe._plan(self.commands)
        for i, node in self.redirected.items():
            targets[i] = node
            for j in self.followers(i):
                targets[j] = node
        return targets


def open_pipe(settings: RedisSettings) -> Pipe:
    """The pipe for the deployment `settings` name: a cluster's, or one connection's."""
    return ClusterPipe(settings) if settings.mode == "cluster" else RedisPipe(settings)
