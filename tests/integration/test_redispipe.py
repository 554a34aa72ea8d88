"""The pipelined Redis connection against a real Redis: order, errors, timeouts, reconnection."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import cast

import pytest
import redis.asyncio as redis
import services

from shared.config import RedisSettings, Settings
from shared.redispipe import NoScriptError, RedisPipe, RedisReplyError, RedisUnavailable


async def test_concurrent_batches_get_their_own_replies(pipe: RedisPipe) -> None:
    async def batch(n: int) -> list[object]:
        return await pipe.execute([("ECHO", f"{n}-{i}") for i in range(n % 7 + 1)])

    replies = await asyncio.gather(*(batch(n) for n in range(200)))
    for n, reply in enumerate(replies):
        assert reply == [f"{n}-{i}".encode() for i in range(n % 7 + 1)]


async def test_an_empty_batch_has_no_replies_and_the_next_batch_gets_its_own(
    pipe: RedisPipe,
) -> None:
    assert await asyncio.gather(pipe.replies([]), pipe.execute([("ECHO", "next")])) == [
        [],
        [b"next"],
    ]


async def test_commands_run_in_the_configured_database(
    pipe: RedisPipe, redis_client: redis.Redis
) -> None:
    await pipe.execute([("SET", "pipe-db-check", "here")])
    assert await redis_client.get("pipe-db-check") == b"here"


async def test_error_replies_are_raised(pipe: RedisPipe) -> None:
    with pytest.raises(NoScriptError):
        await pipe.execute([("EVALSHA", "0" * 40, 0)])
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        await pipe.execute(
            [("MULTI",), ("SET", "pipe-type", "x"), ("LPUSH", "pipe-type", "y"), ("EXEC",)]
        )
    assert await pipe.execute([("PING",)]) == [b"PONG"]  # the connection is still in step


async def test_a_slow_reply_times_out_and_the_next_batch_gets_its_own(
    settings: Settings,
) -> None:
    pipe = RedisPipe(replace(settings.redis, read_timeout=0.2))
    try:
        with pytest.raises(TimeoutError):
            await pipe.execute([("BLPOP", "pipe-never-filled", "0.5"), ("ECHO", "late")])
        assert await pipe.execute([("ECHO", "next")]) == [b"next"]
    finally:
        await pipe.close()


async def test_a_killed_connection_fails_its_batches_and_reconnects(
    pipe: RedisPipe, redis_client: redis.Redis
) -> None:
    [client_id] = await pipe.execute([("CLIENT", "ID")])
    waiting = asyncio.ensure_future(pipe.execute([("BLPOP", "pipe-never-filled", "0.3")]))
    await asyncio.sleep(0.05)
    assert await redis_client.client_kill_filter(_id=client_id) == 1
    with pytest.raises(RedisUnavailable):
        await waiting
    assert await pipe.execute([("PING",)]) == [b"PONG"]


async def test_unreachable_redis_is_reported_quickly() -> None:
    pipe = RedisPipe(
        RedisSettings(hosts=("127.0.0.1",), port=services.free_port(), read_timeout=0.5)
    )
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await asyncio.wait_for(pipe.execute([("PING",)]), 2)


async def test_a_wrong_password_is_reported_without_the_password(settings: Settings) -> None:
    pipe = RedisPipe(replace(settings.redis, password="not-the-password-1234"))
    with pytest.raises(RedisUnavailable) as raised:
        await pipe.execute([("PING",)])
    assert "not-the-password-1234" not in str(raised.value)
    await pipe.close()


async def test_a_batch_that_times_out_while_redis_answers_keeps_the_connection(
    settings: Settings,
) -> None:
    """Aborting would fail every batch in flight, though Redis may have run them."""
    # The first answers at 0.6 s, well within 1 s even on a busy machine.
    pipe = RedisPipe(replace(settings.redis, read_timeout=1.0))
    try:
        [before] = await pipe.execute([("CLIENT", "ID")])
        first = asyncio.ensure_future(pipe.execute([("BLPOP", "pipe-never-filled", "0.6")]))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):  # queued behind the first: answered at about 1.2 s
            await pipe.execute([("BLPOP", "pipe-never-filled", "0.6")])
        assert await first == [None]
        assert await pipe.execute([("ECHO", "mine")]) == [b"mine"]  # not the late reply
        assert await pipe.execute([("CLIENT", "ID")]) == [before]
    finally:
        await pipe.close()


class _Unread(asyncio.Protocol):
    """A Redis that answers the handshake, then stops reading its socket."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"+OK\r\n")  # CLIENT SETNAME
        self.transport.pause_reading()


async def test_a_write_redis_does_not_take_fails_after_the_write_timeout() -> None:
    server = await asyncio.get_running_loop().create_server(_Unread, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RedisPipe(
        RedisSettings(hosts=("127.0.0.1",), port=port, read_timeout=30, write_timeout=0.2)
    )
    try:
        value = b"x" * (8 * 1024 * 1024)  # far more than the socket buffers hold
        with pytest.raises(RedisUnavailable, match="write"):
            await asyncio.wait_for(pipe.execute([("SET", "big", value)]), 10)
    finally:
        await pipe.close()
        server.close()
