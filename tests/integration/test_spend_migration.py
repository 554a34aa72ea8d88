"""Migration 0003 on a database that already holds usage events: the totals start from them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db import key_spend
from shared.db_engine import alembic_config, create_engine, migrate


@pytest.fixture
async def old_schema(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A database of its own at revision 0002, on keymgmt's engine with a short timeout."""
    name = f"gateway_migration_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=settings.postgres.hosts[0],
        port=settings.postgres.port,
        user=settings.postgres.username,
        password=settings.postgres.password or None,
        database="postgres",
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(replace(settings.postgres, db_name=name, read_timeout=0.5))

    def upgrade(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")

    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_totals_start_from_the_events_already_recorded(old_schema: AsyncEngine) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with old_schema.begin() as connection:
        await connection.execute(
            sa.text(
                """INSERT INTO usage_events SELECT gen_random_uuid(), 'r',
                CASE WHEN i % 4 = 0 THEN CAST(:first AS uuid) ELSE CAST(:second AS uuid) END,
                'm', 'p', 200, 1, 1, 0, i, 1, 1, false, now(), now()
                FROM generate_series(1, 1000) AS i"""
            ),
            {"first": first, "second": second},
        )
    await migrate(old_schema)
    async with old_schema.begin() as connection:
        totals = dict(
            (await connection.execute(sa.select(key_spend.c.key_id, key_spend.c.cost_nano))).all()
        )
    assert totals == {
        first: sum(range(4, 1001, 4)),
        second: sum(range(1, 1001)) - sum(range(4, 1001, 4)),
    }
    # Later inserts are counted by the trigger, only those inserted.
    async with old_schema.begin() as connection:
        event_id = str(uuid.uuid4())
        for _ in range(2):
            await connection.execute(
                sa.text(
                    """INSERT INTO usage_events VALUES (:event_id, 'r', :key, 'm', 'p', 200,
                    1, 1, 0, 5, 1, 1, false, now(), now()) ON CONFLICT (event_id) DO NOTHING"""
                ),
                {"event_id": event_id, "key": first},
            )
        total = await connection.scalar(
            sa.select(key_spend.c.cost_nano).where(key_spend.c.key_id == first)
        )
    assert total == sum(range(4, 1001, 4)) + 5


async def test_the_migration_goes_down_and_up_again(old_schema: AsyncEngine) -> None:
    def down_and_up(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        command.downgrade(config, "0002")
        assert not sa.inspect(connection).has_table("key_spend")
        command.upgrade(config, "head")

    async with old_schema.begin() as connection:
        await connection.run_sync(down_and_up)
        assert await connection.scalar(sa.select(sa.func.count()).select_from(key_spend)) == 0
