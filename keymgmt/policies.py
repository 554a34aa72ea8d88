"""Policies (PII detection and masking): their store and their handlers.

Every write moves `updated_at` and announces itself on the change feed, as key writes do. A
policy is deleted (a tombstone, so that the proxies see it go) only while no key refers to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from keymgmt.errors import InvalidInput, PolicyInUse, PolicyNotFound
from keymgmt.routes import load_body
from keymgmt.store import KeyStore, announcement
from keymgmt.typedefs import STORE
from shared.changes import POLICY
from shared.db import keys, policies, policy_from_row
from shared.jsonutil import json_response
from shared.models import Policy
from shared.policy_schemas import CreatePolicySchema, PolicySchema, UpdatePolicySchema
from shared.schemas import MAX_TAGS

POLICIES_PATH = "/api/policies"

create_schema = CreatePolicySchema()
update_schema = UpdatePolicySchema()
policy_schema = PolicySchema()
routes = web.RouteTableDef()


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("name", "tags", "restore"):
        if name in fields:
            values[name] = fields[name]
    if "config" in fields:
        values["rules"] = fields["config"].get("rules", {})
    if "regexConfig" in fields:
        values["regex_rules"] = fields["regexConfig"].get("rules", [])
    return values


def _live(policy_id: str) -> Any:
    return policies.select().where(
        policies.c.policy_id == policy_id, policies.c.deleted_at.is_(None)
    )


class PolicyStore:
    def __init__(self, store: KeyStore) -> None:
        self._store = store  # its transactions: the same engine, timeouts and error mapping

    async def create(self, fields: Mapping[str, Any]) -> Policy:
        values = _values(fields)
        values["policy_id"] = str(uuid.uuid4())
        values["created_at"] = values["updated_at"] = sa.func.now()
        async with self._store.transaction(write=True) as connection:
            insert = policies.insert().values(values).returning(policies)
            row = (await connection.execute(insert)).one()
            await connection.execute(announcement(POLICY, row.policy_id, row.updated_at))
        return policy_from_row(row)

    async def get(self, policy_id: str) -> Policy:
        async with self._store.transaction(write=False) as connection:
            row = (await connection.execute(_live(policy_id))).one_or_none()
        if row is None:
            raise PolicyNotFound(f"no policy with id {policy_id}")
        return policy_from_row(row)

    async def find(self, tags: list[str]) -> list[Policy]:
        query = policies.select().where(policies.c.deleted_at.is_(None))
        if tags:
            query = query.where(policies.c.tags.overlap(sa.cast(tags, policies.c.tags.type)))
        query = query.order_by(policies.c.created_at, policies.c.policy_id)
        async with self._store.transaction(write=False) as connection:
            rows = (await connection.execute(query)).all()
        return [policy_from_row(row) for row in rows]

    async def update(self, policy_id: str, fields: Mapping[str, Any]) -> Policy:
        values = _values(fields)
        values["updated_at"] = sa.func.now()
        async with self._store.transaction(write=True) as connection:
            statement = (
                policies.update()
                .where(policies.c.policy_id == policy_id, policies.c.deleted_at.is_(None))
                .values(values)
                .returning(policies)
            )
            row = (await connection.execute(statement)).one_or_none()
            if row is None:
                raise PolicyNotFound(f"no policy with id {policy_id}")
            await connection.execute(announcement(POLICY, row.policy_id, row.updated_at))
        return policy_from_row(row)

    async def delete(self, policy_id: str) -> None:
        async with self._store.transaction(write=True) as connection:
            # Locked first: a key write naming the policy waits for this one, or this for it.
            locked = (await connection.execute(_live(policy_id).with_for_update())).one_or_none()
            if locked is None:
                raise PolicyNotFound(f"no policy with id {policy_id}")
            users = await connection.execute(
                sa.select(sa.func.count())
                .select_from(keys)
                .where(keys.c.policy_id == policy_id, keys.c.deleted_at.is_(None))
            )
            count = users.scalar_one()
            if count:
                raise PolicyInUse(f"{count} key(s) refer to this policy: give them another first")
            now = sa.func.now()
            deleted = await connection.execute(
                policies.update()
                .where(policies.c.policy_id == policy_id)
                .values(deleted_at=now, updated_at=now)
                .returning(policies.c.updated_at)
            )
            await connection.execute(announcement(POLICY, policy_id, deleted.scalar_one()))


def policy_id_of(request: web.Request) -> str:
    raw = request.match_info["policy_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise PolicyNotFound(f"no policy with id {raw!r}") from None


def store_of(request: web.Request) -> PolicyStore:
    return PolicyStore(request.app[STORE])


@routes.post(POLICIES_PATH)
async def create_policy(request: web.Request) -> web.Response:
    fields = await load_body(request, create_schema)
    return json_response(policy_schema.dump(await store_of(request).create(fields)))


@routes.get(POLICIES_PATH)
async def find_policies(request: web.Request) -> web.Response:
    tags = request.query.getall("tags", []) + request.query.getall("tag", [])
    if len(tags) > MAX_TAGS or any("\x00" in tag for tag in tags):
        raise InvalidInput(f"at most {MAX_TAGS} tags, none with NUL characters")
    found = await store_of(request).find(tags)
    return json_response(policy_schema.dump(found, many=True))


@routes.get(POLICIES_PATH + "/{policy_id}")
async def get_policy(request: web.Request) -> web.Response:
    return json_response(policy_schema.dump(await store_of(request).get(policy_id_of(request))))


@routes.patch(POLICIES_PATH + "/{policy_id}")
async def update_policy(request: web.Request) -> web.Response:
    policy_id = policy_id_of(request)
    fields = await load_body(request, update_schema)
    return json_response(policy_schema.dump(await store_of(request).update(policy_id, fields)))


@routes.delete(POLICIES_PATH + "/{policy_id}")
async def delete_policy(request: web.Request) -> web.Response:
    await store_of(request).delete(policy_id_of(request))
    return web.Response(status=204)
