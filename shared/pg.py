"""Postgres connections over plain asyncpg, for code that has no use for SQLAlchemy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from shared.config import PostgresSettings


async def connect(settings: PostgresSettings, name: str = "gateway") -> asyncpg.Connection:
    """A connection as both services open it (shared.db_engine's engine opens its own with this);
    `name` is its application_name in pg_stat_activity."""
    # asyncpg tries the hosts in order and keeps the first that answers.
    return await asyncpg.connect(
        host=list(settings.hosts),
        port=settings.port,
        user=settings.username or None,
        password=settings.password or None,
        database=settings.db_name,
        timeout=settings.read_timeout,
        command_timeout=settings.read_timeout,
        ssl="require" if settings.ssl_enabled else False,
        server_settings={"application_name": name},
    )


class LazyConnection:
    """One connection, opened on first use and opened anew after any failure; its users (the
    snapshot refreshers of each kind) take turns, as a connection runs one query at a time."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings
        self._connection: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._turn:
            connection = self._connection
            if connection is None or connection.is_closed():
                connection = self._connection = await connect(self._settings)
            try:
                yield connection
            except BaseException:
                # After a timeout, a cancellation or a lost server its state is unknown; a new
                # connection next time is certain, and failures are rare.
                self._connection = None
                connection.terminate()
                raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # A close that fails has aborted the connection already: nothing is left to do.
            with contextlib.suppress(Exception):
                await connection.close(timeout=self._settings.read_timeout)


def describe(error: BaseException) -> str:
    """A one-line account of a database error, without the statement or its parameters."""
    original = getattr(error, "orig", None) or error  # SQLAlchemy's wrapper holds the driver's
    text = str(original).splitlines()[0] if str(original) else ""
    return f"{type(original).__name__}: {text}" if text else type(original).__name__
