"""The limit engine's Redis connection: one socket, batches of commands pipelined on it.

Commands are packed and replies parsed by hiredis in C, and replies come back in the order the
batches went out, so every request of a process shares one connection without a pool. redis-py
spends about 100 µs of CPU per pipeline on its pool, retries and timeouts and 30 µs per command
packing arguments in Python; here a command costs a few µs (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import hiredis

from shared.config import RedisSettings

Command = Sequence[str | int | bytes]


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


class NoScriptError(RedisReplyError):
    """Redis does not hold the script: it restarted or was flushed since the script was loaded."""


class RedisUnavailable(ConnectionError):
    """No connection to Redis, or it broke with replies outstanding."""


def reply_error(reply: Any) -> RedisReplyError | None:
    """The error a reply carries, NOSCRIPT as NoScriptError; None for a reply that succeeded."""
    if not isinstance(reply, RedisReplyError):
        return None
    message = str(reply)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else reply


def raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        for each in reply if isinstance(reply, list) else (reply,):  # EXEC: one per command
            if (error := reply_error(each)) is not None:
                raise error


_INCOMPLETE = object()  # what the reader returns until a whole reply has arrived


class _Batch:
    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int) -> None:
        self.future = future
        self.size = size
        self.replies: list[Any] = []


class _Connection(asyncio.Protocol):
    def __init__(self, write_timeout: float) -> None:
        self._reader = hiredis.Reader(replyError=RedisReplyError, notEnoughData=_INCOMPLETE)
        self._waiting: collections.deque[_Batch] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.last_received = time.monotonic()
        self._write_timeout = write_timeout
        self._write_stalled: asyncio.TimerHandle | None = None
        self._lost_because = "closed by the server"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        if self.transport is None:  # lost since it was found open
            raise RedisUnavailable("connection to Redis lost")
        future = asyncio.get_running_loop().create_future()
        if not commands:  # no reply to wait for: waiting would take the next batch's replies
            future.set_result([])
            return future
        self._waiting.append(_Batch(future, len(commands)))
        # hiredis's stub types its argument as a 1-tuple; any length is packed.
        packed = [hiredis.pack_command(tuple(c)) for c in commands]  # type: ignore[arg-type]
        self.transport.write(b"".join(packed))
        return future

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        self._reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := self._reader.gets()) is not _INCOMPLETE:
                batch = waiting[0]
                batch.replies.append(reply)
                if len(batch.replies) == batch.size:
                    waiting.popleft()
                    if not batch.future.done():  # its caller may have given up
                        batch.future.set_result(batch.replies)
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self.abort()

    def pause_writing(self) -> None:
        # The socket's buffer is full: Redis is not reading. Give up on it past the write timeout
        # rather than queueing every later batch behind it.
        self._write_stalled = asyncio.get_running_loop().call_later(
            self._write_timeout, self._give_up_writing
        )

    def resume_writing(self) -> None:
        if self._write_stalled is not None:
            self._write_stalled.cancel()
            self._write_stalled = None

    def _give_up_writing(self) -> None:
        self._lost_because = f"Redis did not take a write within {self._write_timeout:g}s"
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.resume_writing()
        error = RedisUnavailable(f"connection to Redis lost: {exc or self._lost_because}")
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(error)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def tls_context(settings: RedisSettings) -> ssl.SSLContext | None:
    """The servers' certificates verified, against REDIS_TLS_CA_FILE or the system's CAs."""
    if not settings.tls_enabled:
        return None
    return ssl.create_default_context(cafile=settings.tls_ca_file or None)


def _auth(username: str, password: str) -> list[Command]:
    if not password:
        return []
    return [("AUTH", username, password) if username else ("AUTH", password)]


def client_handshake(settings: RedisSettings) -> list[Command]:
    """The commands that open a client's connection to a data node: its user, its name."""
    return [*_auth(settings.username, settings.password), ("CLIENT", "SETNAME", "gateway")]


async def open_connection(
    settings: RedisSettings,
    tls: ssl.SSLContext | None,
    host: str,
    port: int,
    handshake: list[Command],
) -> tuple[_Connection, Any]:
    """A connection to host:port, and the reply of the last command of the handshake sent on it;
    RedisUnavailable when it cannot be opened or the handshake fails."""
    connection: _Connection | None = None
    try:
        async with asyncio.timeout(settings.read_timeout):
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(settings.write_timeout),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls else None,
            )
            replies = await connection.send(handshake)
            raise_first_error(replies)
    except BaseException as error:
        if connection is not None:
            connection.abort()
        # Refused, timed out, a certificate not trusted (ssl.SSLError is an OSError), bad AUTH.
        if isinstance(error, OSError | RedisReplyError):
            raise RedisUnavailable(f"cannot connect to Redis at {host}:{port}: {error}") from None
        raise
    return connection, replies[-1] if replies else None


def _lost_master(replies: list[Any]) -> bool:
    """A reply of a server that is no longer the master: it was demoted by a failover."""
    return any(
        isinstance(reply, RedisReplyError) and str(reply).startswith("READONLY")
        for reply in replies
    )


class Pipe(Protocol):
    """What the callers need of a connection to Redis, whatever the deployment."""

    async def execute(self, commands: Sequence[Command]) -> list[Any]: ...

    async def replies(self, commands: Sequence[Command]) -> list[Any]: ...

    async def close(self) -> None: ...


class RedisPipe:
    """Sends batches of commands and returns their replies; opens its connection on first use.

    In sentinel mode the connection goes to the master the sentinels name, asked again at each
    connect. After a failover the broken connection, or a demoted master's first READONLY reply
    (in any mode), leads to the new master."""

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._tls = tls_context(settings)
        self._sentinels = settings.addresses()  # the last one that answered comes first

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, sent in one write; raises the first error reply."""
        replies = await self.replies(commands)
        raise_first_error(replies)
        return replies

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of `commands`, sent in one write, an error reply as a RedisReplyError in
        its place (see `reply_error`); raises only when the batch as a whole failed."""
        connection = self._connection
        if connection is None or not connection.open:
            connection = await self._connect()
        future = connection.send(commands)
        try:
            async with asyncio.timeout(self._settings.read_timeout):
                replies = await future
        except TimeoutError:
            # The batch keeps its place, so later replies still find their own batches. Only a
            # Redis silent all this while is given up on: aborting fails every batch in flight,
            # and a batch Redis ran but whose reply was lost is applied again when retried.
            if time.monotonic() - connection.last_received >= self._settings.read_timeout:
                connection.abort()
            raise TimeoutError(
                f"Redis did not answer within {self._settings.read_timeout}s"
            ) from None
        if _lost_master(replies):
            # The next batch connects anew: asking the sentinels again, or resolving a managed
            # service's endpoint, which names the new master by now.
            connection.abort()
        return replies

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None and self._connection.open:
                return self._connection  # another caller connected meanwhile
            settings = self._settings
            handshake = client_handshake(settings)
            if settings.db:
                handshake.append(("SELECT", settings.db))
            if settings.mode == "sentinel":
                host, port = await self._master_address()
                handshake.append(("ROLE",))
            else:
                host, port = settings.addresses()[0]
            connection, last = await open_connection(settings, self._tls, host, port, handshake)
            if settings.mode == "sentinel" and last[0] != b"master":  # ROLE's reply
                connection.abort()  # the sentinels have not yet seen the failover
                raise RedisUnavailable(f"Redis at {host}:{port} is no master (yet)")
            self._connection = connection
            return connection

    async def _master_address(self) -> tuple[str, int]:
        """The master's address as the first sentinel that answers names it."""
        settings = self._settings
        ask: list[Command] = [
            *_auth(settings.sentinel_username, settings.sentinel_password),
            ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.sentinel_master),
        ]
        failures = []
        for address in list(self._sentinels):
            try:
                sentinel, reply = await open_connection(settings, self._tls, *address, ask)
            except RedisUnavailable as error:
                failures.append(str(error))
                continue
            sentinel.abort()
            if reply is None:
                host, port = address
                failures.append(f"sentinel {host}:{port} knows no {settings.sentinel_master!r}")
                continue
            self._sentinels.remove(address)
            self._sentinels.insert(0, address)
            return reply[0].decode(), int(reply[1])
        raise RedisUnavailable("no sentinel named the master: " + "; ".join(failures))

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.abort()
            self._connection = None
