"""Alembic environment: runs on the connection keymgmt hands over, or on its own engine."""

import asyncio

from alembic import context
from sqlalchemy import Connection

from shared.config import Settings
from shared.db import metadata
from shared.db_engine import create_engine


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone() -> None:
    engine = create_engine(Settings.from_env().postgres, pool_size=1)
    async with engine.begin() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported")
shared_connection = context.config.attributes.get("connection")
if shared_connection is None:
    asyncio.run(run_standalone())
else:
    run_on(shared_connection)
