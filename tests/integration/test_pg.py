"""Plain asyncpg connections honour every POSTGRESQL_* setting, and reconnect after a failure."""

from __future__ import annotations

import dataclasses
import socket

import asyncpg
import pytest

from shared.config import Settings
from shared.pg import LazyConnection, connect


async def test_connects_as_configured(settings: Settings) -> None:
    connection = await connect(settings.postgres)
    try:
        row = await connection.fetchrow(
            "SELECT current_database(), current_user, current_setting('application_name')"
        )
    finally:
        await connection.close()
    assert tuple(row) == (settings.postgres.db_name, settings.postgres.username, "gateway")


async def test_hosts_are_tried_in_order(settings: Settings) -> None:
    # One port for every host, as POSTGRESQL_PORT gives it: the first host refuses it.
    pg = settings.postgres
    unreachable = "127.0.0.2" if pg.hosts[0] != "127.0.0.2" else "127.0.0.3"
    with socket.socket() as probe:
        try:
            probe.bind((unreachable, pg.port))
        except OSError:
            pytest.skip(f"{unreachable}:{pg.port} is in use here")
    connection = await connect(dataclasses.replace(pg, hosts=(unreachable, *pg.hosts)))
    await connection.close()


async def test_read_timeout_bounds_connecting_and_statements(settings: Settings) -> None:
    quick = dataclasses.replace(settings.postgres, read_timeout=0.2)
    connection = await connect(quick)
    try:
        with pytest.raises(TimeoutError):
            await connection.fetchval("SELECT pg_sleep(2)")
    finally:
        await connection.close()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = dataclasses.replace(quick, hosts=("127.0.0.1",), port=silent.getsockname()[1])
        with pytest.raises(TimeoutError):
            await connect(mute)


async def test_ssl_enabled_requires_tls(settings: Settings) -> None:
    secure = dataclasses.replace(settings.postgres, ssl_enabled=True)
    connection = await asyncpg.connect(
        host=secure.hosts[0],
        port=secure.port,
        user=secure.username,
        password=secure.password or None,
        database=secure.db_name,
    )
    try:
        server_ssl = await connection.fetchval("SHOW ssl")
    finally:
        await connection.close()
    if server_ssl != "on":
        with pytest.raises(ConnectionError):
            await connect(secure)
        return
    connection = await connect(secure)
    try:
        assert await connection.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await connection.close()


async def test_lazy_connection_is_opened_anew_after_a_failure(settings: Settings) -> None:
    database = LazyConnection(dataclasses.replace(settings.postgres, read_timeout=0.3))
    try:
        async with database.use() as connection:
            first = await connection.fetchval("SELECT pg_backend_pid()")
        async with database.use() as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") == first
        with pytest.raises(TimeoutError):
            async with database.use() as connection:
                await connection.fetchval("SELECT pg_sleep(2)")
        async with database.use() as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") != first
    finally:
        await database.close()
