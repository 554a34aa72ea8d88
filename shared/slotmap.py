"""Which master serves each slot of a Redis Cluster, as CLUSTER SLOTS says, and a connection to
each master, opened on first use; read anew when a redirect or a refusal shows it wrong."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from shared.config import RedisSettings
from shared.redispipe import (
    RedisReplyError,
    RedisUnavailable,
    _Connection,
    client_handshake,
    open_connection,
)
from shared.slots import SLOTS


class Node:
    """A node of the cluster (a master, as last seen) and the connection to it."""

    __slots__ = ("connecting", "connection", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connection: _Connection | None = None
        self.connecting = asyncio.Lock()

    @property
    def open(self) -> bool:
        return self.connection is not None and self.connection.open

    def __repr__(self) -> str:
        return f"{self.host}:{self.port}"


class SlotMap:
    """Read from the seeds (the first that answers) on first use."""

    def __init__(self, settings: RedisSettings, tls: ssl.SSLContext | None) -> None:
        self._settings, self._tls = settings, tls
        self._seeds = settings.addresses()
        self._nodes: dict[tuple[str, int], Node] = {}
        self.route: list[Node] = []  # by slot; empty until the map is first read
        self.masters: list[Node] = []  # in the order of their first slots
        self._known: list[tuple[str, int]] = []  # every node of the last map, replicas too
        self.version = 0  # so that a burst of redirects reads the map once
        self._reading = asyncio.Lock()

    def node(self, host: str, port: int) -> Node:
        node = self._nodes.get((host, port))
        if node is None:
            node = self._nodes[host, port] = Node(host, port)
        return node

    async def connect(self, node: Node) -> _Connection:
        async with node.connecting:
            if node.connection is None or not node.connection.open:
                handshake = client_handshake(self._settings)  # no SELECT: a cluster has db 0 only
                address = node.host, node.port
                node.connection, _ = await open_connection(
                    self._settings, self._tls, *address, handshake
                )
            return node.connection

    async def refresh(self, seen: int) -> None:
        """Read the map anew from the first node that answers, unless it was read again since
        version `seen`."""
        async with self._reading:
            if self.version != seen:
                return
            failures = []
            for host, port in self._candidates():
                try:
                    ranges = await self._cluster_slots(host, port)
                except RedisUnavailable as error:
                    failures.append(str(error))
                    continue
                if isinstance(ranges, RedisReplyError) or not ranges:
                    failures.append(f"{host}:{port} has no slot map: {ranges or 'empty'}")
                    continue
                self._install(ranges, host)
                self.version += 1
                return
            raise RedisUnavailable("no node of the cluster gave its slots: " + "; ".join(failures))

    def _candidates(self) -> list[tuple[str, int]]:
        """Masters connected to first (no connection to open), then every node of the last map,
        then the seeds."""
        connected = [(node.host, node.port) for node in self.masters if node.open]
        return list(dict.fromkeys([*connected, *self._known, *self._seeds]))

    async def _cluster_slots(self, host: str, port: int) -> Any:
        node = self._nodes.get((host, port))
        if node is not None and node.connection is not None and node.connection.open:
            [reply] = await node.connection.send([("CLUSTER", "SLOTS")])
            return reply
        handshake = [*client_handshake(self._settings), ("CLUSTER", "SLOTS")]
        connection, reply = await open_connection(self._settings, self._tls, host, port, handshake)
        connection.abort()
        return reply

    def _install(self, ranges: list[Any], asked: str) -> None:
        route: list[Node | None] = [None] * SLOTS
        masters: list[Node] = []
        known: list[tuple[str, int]] = []
        for start, end, *nodes in sorted(ranges, key=lambda r: int(r[0])):
            # An empty host is "the one you asked"; the port is the TLS one over TLS.
            addresses = [(n[0].decode() or asked, int(n[1])) for n in nodes]
            master = self.node(*addresses[0])
            if master not in masters:
                masters.append(master)
            route[start : end + 1] = [master] * (end - start + 1)
            known += addresses
        # A slot no master serves goes to any: it answers CLUSTERDOWN, or MOVED by then.
        self.route = [node or masters[0] for node in route]
        self.masters, self._known = masters, list(dict.fromkeys(known))

    def moved(self, slot: int, node: Node) -> None:
        """`slot` is `node`'s now, as its old master's MOVED said."""
        self.route[slot] = node
        if node not in self.masters:
            self.masters.append(node)

    def close(self) -> None:
        for node in self._nodes.values():
            if node.connection is not None:
                node.connection.abort()
                node.connection = None
