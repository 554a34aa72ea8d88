"""Key configurations in Postgres. Every write moves `updated_at`, which the proxy refreshes by,
and announces itself on the change feed in its own transaction (shared.changes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keymgmt.errors import ApiError, DatabaseUnavailable, InvalidInput, KeyExists, KeyNotFound
from keymgmt.references import lock_settings
from shared.changes import CHANNEL, KEY
from shared.config import PostgresSettings
from shared.db import key_from_row, keys, policies
from shared.db_engine import is_unavailable
from shared.durations import parse_duration
from shared.models import Key, hash_key
from shared.pg import describe
from shared.schemas import check_limit_pairs

# API field name -> column, for the fields a client may set.
COLUMNS = {
    "name": "name",
    "tags": "tags",
    "revoked": "revoked",
    "revokedReason": "revoked_reason",
    "costLimitInUsd": "cost_limit_in_usd",
    "costLimitInUsdOverTime": "cost_limit_in_usd_over_time",
    "costLimitInUsdUnit": "cost_limit_in_usd_unit",
    "rateLimitOverTime": "rate_limit_over_time",
    "rateLimitUnit": "rate_limit_unit",
    "ttl": "ttl",
    "rotationEnabled": "rotation_enabled",
    "policyId": "policy_id",
    "allowedPaths": "allowed_paths",
    "allowedModels": "allowed_models",
    "rateLimits": "rate_limits",
    "shouldLogRequest": "should_log_request",
    "shouldLogResponse": "should_log_response",
}
# What null means for each nullable field: "no limit".
CLEARED = {
    "costLimitInUsd": 0.0,
    "costLimitInUsdOverTime": 0.0,
    "costLimitInUsdUnit": "",
    "rateLimitOverTime": 0,
    "rateLimitUnit": "",
    "ttl": "",
    "policyId": None,
}


def stored_paths(rules: list[dict[str, str]]) -> list[dict[str, str]]:
    """Methods in capitals, each rule once, in a stable order."""
    unique = {(rule["method"].upper(), rule["path"]) for rule in rules}
    return [{"path": path, "method": method} for method, path in sorted(unique)]


# How a validated API value is stored, where that differs from the value itself.
STORED = {
    "allowedPaths": stored_paths,
    "allowedModels": lambda models: sorted(set(models)),
}


def column_values(
    fields: Mapping[str, Any], columns: Mapping[str, str], cleared: Mapping[str, Any]
) -> dict[str, Any]:
    values = {}
    for name, value in fields.items():
        if name not in columns:
            continue
        if value is None:
            value = cleared[name]
        elif name in STORED:
            value = STORED[name](value)
        values[columns[name]] = value
    return values


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    values = column_values(fields, COLUMNS, CLEARED)
    if values.get("policy_id") == "":
        values["policy_id"] = None
    return values


async def _check_policy(connection: AsyncConnection, values: Mapping[str, Any]) -> None:
    """The key's policy exists, and stays so until this write commits (deleting it waits)."""
    policy_id = values.get("policy_id")
    if policy_id is None:
        return
    query = (
        sa.select(policies.c.policy_id)
        .where(policies.c.policy_id == policy_id, policies.c.deleted_at.is_(None))
        .with_for_update(read=True)
    )
    if (await connection.execute(query)).one_or_none() is None:
        raise InvalidInput({"policyId": [f"no policy with id {policy_id}"]})


def _setting_ids(fields: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The field naming the key's settings and their ids (in order, once each), if given."""
    if "settingIds" in fields:
        return "settingIds", list(dict.fromkeys(str(uuid.UUID(i)) for i in fields["settingIds"]))
    if "settingId" in fields:
        return "settingId", [str(uuid.UUID(fields["settingId"]))] if fields["settingId"] else []
    return None


async def _name_settings(
    connection: AsyncConnection, fields: Mapping[str, Any], values: dict[str, Any]
) -> None:
    """The settings given, checked and held until the write commits (keymgmt.references)."""
    named = _setting_ids(fields)
    if named is not None:
        field, setting_ids = named
        await lock_settings(connection, field, setting_ids)
        values["setting_ids"] = setting_ids


def expiry(ttl: str, created_at: Any) -> Any:
    # From the whole second reported as createdAt, so that createdAt + ttl is the exact expiry.
    return (
        created_at.replace(microsecond=0) + timedelta(seconds=parse_duration(ttl)) if ttl else None
    )


class Store:
    """Transactions with the write timeout, Postgres being away as a 503, a conflict as a 409."""

    def __init__(self, engine: AsyncEngine, settings: PostgresSettings) -> None:
        self._engine = engine
        self._write_timeout_ms = max(1, int(settings.write_timeout * 1000))

    def _conflict(self, error: exc.IntegrityError) -> ApiError:
        raise NotImplementedError

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as connection:
                if write:
                    await connection.execute(
                        sa.select(
                            sa.func.set_config(
                                "statement_timeout", str(self._write_timeout_ms), True
                            )
                        )
                    )
                yield connection
        except exc.IntegrityError as error:
            raise self._conflict(error) from error
        except Exception as error:
            if is_unavailable(error):
                raise DatabaseUnavailable(f"postgres unavailable: {describe(error)}") from None
            raise

    async def ping(self) -> bool:
        try:
            async with self.transaction(write=False) as connection:
                await connection.execute(sa.text("SELECT 1"))
        except DatabaseUnavailable:
            return False
        return True

    async def fetch(self, query: sa.Executable) -> list[Any]:
        """Rows of a read-only query, with the store's error handling."""
        async with self.transaction(write=False) as connection:
            return list((await connection.execute(query)).all())


class KeyStore(Store):
    def _conflict(self, error: exc.IntegrityError) -> ApiError:
        return KeyExists(
            "a key with this value already exists (a revoked key keeps its value; delete it"
            " to use the value again)"
        )

    async def create(self, fields: Mapping[str, Any]) -> Key:
        values = _values(fields)
        values["key_id"] = str(uuid.uuid4())
        values["key_hash"] = hash_key(fields["key"])
        now = sa.func.now()
        values["created_at"] = values["updated_at"] = now
        ttl = values.get("ttl", "")
        if ttl:
            values["expires_at"] = sa.func.date_trunc("second", now) + timedelta(
                seconds=parse_duration(ttl)
            )
        async with self.transaction(write=True) as connection:
            await _name_settings(connection, fields, values)
            await _check_policy(connection, values)
            row = (await connection.execute(keys.insert().values(values).returning(keys))).one()
            await connection.execute(announcement(KEY, row.key_id, row.updated_at))
        return key_from_row(row)

    async def get(self, key_id: str) -> Key:
        async with self.transaction(write=False) as connection:
            row = (await connection.execute(_live(key_id))).one_or_none()
        if row is None:
            raise KeyNotFound(f"no key with id {key_id}")
        return key_from_row(row)

    async def find(self, tags: list[str], key_ids: list[str]) -> list[Key]:
        conditions = []
        if tags:
            conditions.append(keys.c.tags.overlap(sa.cast(tags, keys.c.tags.type)))
        if key_ids:
            conditions.append(keys.c.key_id.in_(key_ids))
        query = (
            keys.select()
            .where(keys.c.deleted_at.is_(None), sa.or_(*conditions))
            .order_by(keys.c.created_at, keys.c.key_id)
        )
        async with self.transaction(write=False) as connection:
            rows = (await connection.execute(query)).all()
        return [key_from_row(row) for row in rows]

    async def update(self, key_id: str, fields: Mapping[str, Any]) -> Key:
        async with self.transaction(write=True) as connection:
            row = (await connection.execute(_live(key_id).with_for_update())).one_or_none()
            if row is None:
                raise KeyNotFound(f"no key with id {key_id}")
            values = _values(fields)
            merged = {
                api: values.get(column, getattr(row, column)) for api, column in COLUMNS.items()
            }
            try:
                check_limit_pairs(merged)
            except ValidationError as error:
                raise InvalidInput(error.normalized_messages()) from None
            if "ttl" in values:
                values["expires_at"] = expiry(values["ttl"], row.created_at)
            await _name_settings(connection, fields, values)
            await _check_policy(connection, values)
            values["updated_at"] = sa.func.now()
            updated = (
                await connection.execute(
                    keys.update().where(keys.c.key_id == key_id).values(values).returning(keys)
                )
            ).one()
            await connection.execute(announcement(KEY, updated.key_id, updated.updated_at))
        return key_from_row(updated)

    async def delete(self, key_id: str) -> None:
        async with self.transaction(write=True) as connection:
            now = sa.func.now()
            result = await connection.execute(
                keys.update()
                .where(keys.c.key_id == key_id, keys.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
                .returning(keys.c.updated_at)
            )
            deleted = result.one_or_none()
            if deleted is None:
                raise KeyNotFound(f"no key with id {key_id}")
            await connection.execute(announcement(KEY, key_id, deleted.updated_at))


def announcement(kind: str, object_id: str, updated_at: datetime) -> sa.Select[Any]:
    """Run last in a write's transaction: Postgres delivers it when, and only if, that commits."""
    payload = sa.func.json_build_object(
        "kind", kind, "id", str(object_id), "version", updated_at.timestamp(),
        "at", sa.extract("epoch", sa.func.clock_timestamp()),
    )  # fmt: skip
    return sa.select(sa.func.pg_notify(CHANNEL, sa.cast(payload, sa.Text)))


def _live(key_id: str) -> sa.Select[Any]:
    return keys.select().where(keys.c.key_id == key_id, keys.c.deleted_at.is_(None))
