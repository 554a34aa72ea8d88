"""End users: create (POST), update (PATCH), find (GET) and delete them under `/api/users`.

Stored like keys: every write moves `updated_at` and announces itself (kind "user") in its own
transaction, and a deletion leaves a tombstone, so that the proxies' user snapshot follows.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from marshmallow import ValidationError, fields, validate

from keymgmt.errors import InvalidInput, LimitsUnavailable, UserNotFound
from keymgmt.listing import MAX_IDS, PageSchema, text_list
from keymgmt.routes import load_body
from keymgmt.store import CLEARED, KeyStore, announcement, column_values, expiry
from keymgmt.typedefs import LIMITS, STORE
from shared.changes import USER
from shared.db import user_from_row, users
from shared.durations import parse_duration
from shared.jsonutil import json_response
from shared.models import User
from shared.redispipe import RedisReplyError
from shared.schemas import CreateUserSchema, UpdateUserSchema, UserSchema, check_limit_pairs

USERS_PATH = "/api/users"

COLUMNS = {
    "userId": "user_id",
    "name": "name",
    "tags": "tags",
    "keyIds": "key_ids",
    "revoked": "revoked",
    "revokedReason": "revoked_reason",
    "costLimitInUsd": "cost_limit_in_usd",
    "costLimitInUsdOverTime": "cost_limit_in_usd_over_time",
    "costLimitInUsdUnit": "cost_limit_in_usd_unit",
    "rateLimitOverTime": "rate_limit_over_time",
    "rateLimitUnit": "rate_limit_unit",
    "ttl": "ttl",
    "allowedPaths": "allowed_paths",
    "allowedModels": "allowed_models",
}


def _values(body: dict[str, Any]) -> dict[str, Any]:
    if "keyIds" in body:
        body = {**body, "keyIds": sorted({str(key_id) for key_id in body["keyIds"]})}
    return column_values(body, COLUMNS, CLEARED)


class UserStore:
    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def create(self, body: dict[str, Any]) -> User:
        values = _values(body)
        values["id"] = str(uuid.uuid4())
        now = sa.func.now()
        values["created_at"] = values["updated_at"] = now
        if values.get("ttl"):
            values["expires_at"] = sa.func.date_trunc("second", now) + timedelta(
                seconds=parse_duration(values["ttl"])
            )
        async with self._store.transaction(write=True) as connection:
            row = (await connection.execute(users.insert().values(values).returning(users))).one()
            await connection.execute(announcement(USER, row.id, row.updated_at))
        return user_from_row(row)

    async def update(self, record_id: str, body: dict[str, Any]) -> User:
        async with self._store.transaction(write=True) as connection:
            row = (await connection.execute(_live(record_id).with_for_update())).one_or_none()
            if row is None:
                raise UserNotFound(f"no user with id {record_id}")
            values = _values(body)
            merged = {api: values.get(col, getattr(row, col)) for api, col in COLUMNS.items()}
            try:
                check_limit_pairs(merged)
            except ValidationError as error:
                raise InvalidInput(error.normalized_messages()) from None
            if "ttl" in values:
                values["expires_at"] = expiry(values["ttl"], row.created_at)
            values["updated_at"] = sa.func.now()
            statement = users.update().where(users.c.id == record_id).values(values)
            updated = (await connection.execute(statement.returning(users))).one()
            await connection.execute(announcement(USER, updated.id, updated.updated_at))
        return user_from_row(updated)

    async def get(self, record_id: str) -> User:
        rows = await self._store.fetch(_live(record_id))
        if not rows:
            raise UserNotFound(f"no user with id {record_id}")
        return user_from_row(rows[0])

    async def delete(self, record_id: str) -> None:
        async with self._store.transaction(write=True) as connection:
            now = sa.func.now()
            deleted = (
                await connection.execute(
                    users.update()
                    .where(users.c.id == record_id, users.c.deleted_at.is_(None))
                    .values(deleted_at=now, updated_at=now)
                    .returning(users.c.updated_at)
                )
            ).one_or_none()
            if deleted is None:
                raise UserNotFound(f"no user with id {record_id}")
            await connection.execute(announcement(USER, record_id, deleted.updated_at))

    async def find(self, filters: dict[str, Any]) -> list[User]:
        """Users having any of the tags, or listing any of the keys, or any of the user ids."""
        u = users.c
        conditions = []
        if filters.get("tags"):
            conditions.append(u.tags.overlap(sa.cast(filters["tags"], u.tags.type)))
        if filters.get("keyIds"):
            key_ids = [str(key_id) for key_id in filters["keyIds"]]
            conditions.append(u.key_ids.overlap(sa.cast(key_ids, u.key_ids.type)))
        if filters.get("userIds"):
            conditions.append(u.user_id.in_(filters["userIds"]))
        query = users.select().where(u.deleted_at.is_(None))
        if conditions:
            query = query.where(sa.or_(*conditions))
        query = query.order_by(u.created_at, u.id).limit(filters["limit"])
        query = query.offset(filters["offset"])
        return [user_from_row(row) for row in await self._store.fetch(query)]


def _live(record_id: str) -> sa.Select[Any]:
    return users.select().where(users.c.id == record_id, users.c.deleted_at.is_(None))


class UserQuerySchema(PageSchema):
    tags = text_list()
    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_IDS))
    userIds = text_list(MAX_IDS)


create_schema, update_schema = CreateUserSchema(), UpdateUserSchema()
user_schema, query_schema = UserSchema(), UserQuerySchema()
routes = web.RouteTableDef()


def _user_store(request: web.Request) -> UserStore:
    return UserStore(request.app[STORE])


def record_id_of(request: web.Request) -> str:
    raw = request.match_info["user_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise UserNotFound(f"no user with id {raw!r}") from None


def _query(request: web.Request) -> dict[str, Any]:
    query = request.query
    raw: dict[str, Any] = {
        name: query.getall(name) for name in ("tags", "keyIds", "userIds") if name in query
    }
    for name in ("offset", "limit"):
        if name in query:
            value = query[name]
            raw[name] = int(value) if value.isdigit() and len(value) < 12 else value
    try:
        return query_schema.load(raw)
    except ValidationError as error:
        raise InvalidInput(error.normalized_messages()) from None


@routes.post(USERS_PATH)
async def create_user(request: web.Request) -> web.Response:
    user = await _user_store(request).create(await load_body(request, create_schema))
    return json_response(user_schema.dump(user))


@routes.get(USERS_PATH)
async def find_users(request: web.Request) -> web.Response:
    found = await _user_store(request).find(_query(request))
    return json_response(user_schema.dump(found, many=True))


@routes.patch(USERS_PATH + "/{user_id}")
async def update_user(request: web.Request) -> web.Response:
    record_id = record_id_of(request)
    body = await load_body(request, update_schema)
    return json_response(user_schema.dump(await _user_store(request).update(record_id, body)))


@routes.get("/api/reporting/users/{user_id}")
async def user_spend(request: web.Request) -> web.Response:
    """A user's spend as the proxies charged it (every call matched to the user, limits or not)."""
    user = await _user_store(request).get(record_id_of(request))
    try:
        usage = await request.app[LIMITS].usage(user)
    except (RedisReplyError, OSError):
        raise LimitsUnavailable("redis unavailable: spend cannot be read now") from None
    return json_response(
        {
            "id": user.record_id,
            "userId": user.user_id,
            "costInUsd": usage.cost_usd,
            "costInUsdOverTime": usage.cost_usd_in_window,
            "costLimitInUsdUnit": user.cost_limit_in_usd_unit,
            "requestsInWindow": usage.requests_in_window,
            "rateLimitUnit": user.rate_limit_unit,
        }
    )


@routes.delete(USERS_PATH + "/{user_id}")
async def delete_user(request: web.Request) -> web.Response:
    await _user_store(request).delete(record_id_of(request))
    return web.Response(status=204)
