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
from keymgmt.references import lock_settings
from keymgmt.store import Store, announcement
from shared.changes import ROUTE
from shared.db import keys, provider_settings, routes

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
    """Every step must be one every key in key_ids can take, as the proxy resolves it:

    - a step with a settingId goes through that setting: it must exist (held, FOR SHARE, until
      the transaction ends, as keys hold theirs), be of the step's provider, allow the step's
      model, and be among the settingIds of every key (a route never widens what a key may use);
    - a step without one goes through the key's own settings of the step's provider (any of
      them, with rotation): every key needs at least one, each allowing the model; an openai
      step also takes a key without any setting, which uses the gateway's own credential.

    A key changed later so that it cannot take a step any more is passed over at that step.
    """
    named = sorted({step["settingId"] for step in steps if step.get("settingId")})
    await lock_settings(connection, "steps", named)
    owners = (
        await connection.execute(
            sa.select(keys.c.key_id, keys.c.setting_ids).where(keys.c.key_id.in_(key_ids))
        )
    ).all() if key_ids else []  # fmt: skip
    key_settings = {str(key_id): [str(s) for s in ids or ()] for key_id, ids in owners}
    wanted = set(named).union(*key_settings.values())
    settings = {
        str(row.setting_id): row
        for row in await connection.execute(
            sa.select(
                provider_settings.c.setting_id,
                provider_settings.c.provider,
                provider_settings.c.name,
                provider_settings.c.allowed_models,
            ).where(
                provider_settings.c.setting_id.in_(wanted),
                provider_settings.c.deleted_at.is_(None),
            )
        )
    }
    problems: list[str] = []
    for index, step in enumerate(steps):
        problems += _step_problems(index, step, settings, key_settings)
    if problems:
        raise InvalidInput({"steps": problems})


def _allows(setting: Any, model: str) -> bool:
    return not setting.allowed_models or model in setting.allowed_models


def _step_problems(
    index: int,
    step: Mapping[str, Any],
    settings: Mapping[str, Any],
    key_settings: Mapping[str, list[str]],
) -> list[str]:
    at, provider, model = f"steps[{index}]", step["provider"], step["model"]
    setting_id = step.get("settingId")
    if setting_id:
        setting = settings[setting_id]
        if setting.provider != provider:
            return [f"{at}: setting {setting_id} is for {setting.provider}, not {provider}"]
        problems = []
        if not _allows(setting, model):
            problems.append(f"{at}: model {model!r} is not among the allowedModels of setting"
                            f" {setting.name!r}")  # fmt: skip
        problems += [
            f"{at}: key {key_id} does not hold setting {setting_id} (its settingIds)"
            for key_id, held in key_settings.items()
            if setting_id not in held
        ]
        return problems
    problems = []
    for key_id, held in key_settings.items():
        usable = [settings[i] for i in held if i in settings and settings[i].provider == provider]
        if not held and provider == "openai":
            continue  # the gateway's own OpenAI credential
        if not usable:
            problems.append(f"{at}: key {key_id} has no {provider} provider setting")
        problems += [
            f"{at}: model {model!r} is not among the allowedModels of setting {s.name!r}"
            f" (of key {key_id})"
            for s in usable
            if not _allows(s, model)
        ]
    return problems


def check_step_endpoints(path: str, steps: Sequence[Mapping[str, Any]]) -> None:
    """Anthropic steps answer chat completions only (through the translator)."""
    if path.endswith("/chat/completions"):
        return
    wrong = [i for i, step in enumerate(steps) if step["provider"] == "anthropic"]
    if wrong:
        raise InvalidInput(
            {
                "steps": [
                    f"steps[{i}]: an anthropic step serves chat completions only" for i in wrong
                ]
            }
        )


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
    check_step_endpoints(route["path"], route["steps"])
    await check_keys_exist(connection, route["keyIds"])
    await check_step_credentials(connection, route["keyIds"], route["steps"])


def _live(route_id: str) -> sa.Select[Any]:
    return routes.select().where(routes.c.route_id == route_id, routes.c.deleted_at.is_(None))
