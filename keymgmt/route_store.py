"""Routes in Postgres, written like keys: every write moves `updated_at` and announces itself on
the change feed in its own transaction; a deletion leaves a tombstone for the proxies to see."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from keymgmt.errors import ApiError, InvalidInput, PathTaken, RouteNotFound
from keymgmt.store import Store, announcement
from shared.changes import ROUTE
from shared.db import keys, routes

# API field name -> column, for the fields a client may set.
COLUMNS = {
    "name": "name",
    "path": "path",
    "keyIds": "key_ids",
    "steps": "steps",
    "retryStrategy": "retry_strategy",
    "cacheConfig": "cache_config",
    "coolDown": "cool_down",
}
MERGED_FIELDS = ("cacheConfig", "coolDown")  # a PATCH merges these field by field


def route_of(row: Any) -> dict[str, Any]:
    """A route in the API's shape."""
    route = {api: getattr(row, column) for api, column in COLUMNS.items()}
    route["keyIds"] = [str(key_id) for key_id in route["keyIds"]]
    route["id"] = str(row.route_id)
    route["createdAt"] = int(row.created_at.timestamp())
    route["updatedAt"] = int(row.updated_at.timestamp())
    return route


async def check_keys_exist(connection: AsyncConnection, key_ids: Sequence[str]) -> None:
    if not key_ids:
        return
    query = sa.select(keys.c.key_id).where(keys.c.key_id.in_(key_ids), keys.c.deleted_at.is_(None))
    found = {str(key_id) for key_id in (await connection.execute(query)).scalars()}
    missing = [key_id for key_id in key_ids if key_id not in found]
    if missing:
        raise InvalidInput({"keyIds": [f"no such key: {', '.join(missing)}"]})


async def check_step_credentials(
    connection: AsyncConnection, key_ids: Sequence[str], steps: Sequence[Mapping[str, Any]]
) -> None:
    """Every step's provider must be usable by every key in key_ids: a setting for it (the
    step's settingId, which must exist, else one of the key's settings for that provider), or
    the default OpenAI credential; a model the step's setting does not allow is a 400.

    Provider settings are not stored yet: there is nothing to look a settingId up in, and every
    key may use the default OpenAI credential. The schema has checked the settingIds' form.
    """


class RouteStore(Store):
    def _conflict(self, error: exc.IntegrityError) -> ApiError:
        return PathTaken("a route with this path exists")

    async def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        values = {column: fields[api] for api, column in COLUMNS.items()}
        values["route_id"] = str(uuid.uuid4())
        values["created_at"] = values["updated_at"] = sa.func.now()
        async with self.transaction(write=True) as connection:
            await _check_references(connection, fields)
            row = (await connection.execute(routes.insert().values(values).returning(routes))).one()
            await connection.execute(announcement(ROUTE, row.route_id, row.updated_at))
        return route_of(row)

    async def get(self, route_id: str) -> dict[str, Any]:
        async with self.transaction(write=False) as connection:
            row = (await connection.execute(_live(route_id))).one_or_none()
        if row is None:
            raise RouteNotFound(f"no route with id {route_id}")
        return route_of(row)

    async def all(self) -> list[dict[str, Any]]:
        query = (
            routes.select()
            .where(routes.c.deleted_at.is_(None))
            .order_by(routes.c.created_at, routes.c.route_id)
        )
        async with self.transaction(write=False) as connection:
            return [route_of(row) for row in (await connection.execute(query)).all()]

    async def update(self, route_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        async with self.transaction(write=True) as connection:
            row = (await connection.execute(_live(route_id).with_for_update())).one_or_none()
            if row is None:
                raise RouteNotFound(f"no route with id {route_id}")
            merged = route_of(row)
            for name, value in fields.items():
                merged[name] = {**merged[name], **value} if name in MERGED_FIELDS else value
            await _check_references(connection, merged)
            values = {column: merged[api] for api, column in COLUMNS.items() if api in fields}
            values["updated_at"] = sa.func.now()
            updated = (
                await connection.execute(
                    routes.update()
                    .where(routes.c.route_id == route_id)
                    .values(values)
                    .returning(routes)
                )
            ).one()
            await connection.execute(announcement(ROUTE, route_id, updated.updated_at))
        return route_of(updated)

    async def delete(self, route_id: str) -> None:
        async with self.transaction(write=True) as connection:
            now = sa.func.now()
            deleted = (
                await connection.execute(
                    routes.update()
                    .where(routes.c.route_id == route_id, routes.c.deleted_at.is_(None))
                    .values(deleted_at=now, updated_at=now)
                    .returning(routes.c.updated_at)
                )
            ).one_or_none()
            if deleted is None:
                raise RouteNotFound(f"no route with id {route_id}")
            await connection.execute(announcement(ROUTE, route_id, deleted.updated_at))


async def _check_references(connection: AsyncConnection, route: Mapping[str, Any]) -> None:
    await check_keys_exist(connection, route["keyIds"])
    await check_step_credentials(connection, route["keyIds"], route["steps"])


def _live(route_id: str) -> sa.Select[Any]:
    return routes.select().where(routes.c.route_id == route_id, routes.c.deleted_at.is_(None))
