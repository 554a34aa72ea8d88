"""The asyncio engine, Postgres availability, start-up waiting and migrations."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.config import PostgresSettings
from shared.pg import connect, describe

log = logging.getLogger("gateway.db")


# Failures that mean "Postgres is not there right now", as opposed to a bad statement.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    # A statement past its statement_timeout: Postgres is too slow (or a lock holds it) now.
    asyncpg.QueryCanceledError,
)


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    # SQLAlchemy wraps the driver's error, which wraps asyncpg's: look through the chain.
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, UNAVAILABLE_ERRORS):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def create_engine(settings: PostgresSettings, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        "postgresql+asyncpg://",
        # Connections opened exactly as the proxy opens its own, from the same settings.
        async_creator=functools.partial(connect, settings),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=settings.read_timeout,
    )


async def wait_for_database(engine: AsyncEngine, max_delay: float = 10.0) -> None:
    """Block until Postgres answers, logging one line per failed try, backing off."""
    delay = 0.25
    attempt = 1
    while True:
        try:
            async with engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
            return
        except Exception as error:
            if not is_unavailable(error):
                raise
            log.warning(
                "postgres not reachable (try %d): %s; retrying in %.1fs",
                attempt,
                describe(error),
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
        attempt += 1


MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 7_226_330_151  # any constant: serialises concurrent migrators


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to run from several replicas at once."""

    def upgrade(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        await connection.run_sync(upgrade)
    log.info("schema is up to date")
