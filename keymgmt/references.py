"""What refers to a provider setting, in one place: keys, and routes (a step's settingId).

Keys and routes lock the settings they name (FOR SHARE) in the transaction that writes them,
and a setting's deletion locks it (FOR UPDATE) before asking who refers to it: either the
deletion sees the key or route, or its write finds the setting gone. Never both succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from keymgmt.errors import InvalidInput
from shared.db import keys, provider_settings, routes

SHOWN = 5  # referrers named in a refusal


def _keys_using(setting_id: str) -> sa.Select[Any]:
    return (
        sa.select(keys.c.key_id)
        .where(keys.c.deleted_at.is_(None), keys.c.setting_ids.contains([setting_id]))
        .order_by(keys.c.key_id)
        .limit(SHOWN)
    )


def _routes_using(setting_id: str) -> sa.Select[Any]:
    # jsonb containment: some step of the route names the setting.
    return (
        sa.select(routes.c.route_id)
        .where(routes.c.deleted_at.is_(None), routes.c.steps.contains([{"settingId": setting_id}]))
        .order_by(routes.c.route_id)
        .limit(SHOWN)
    )


# (what refers, the query of the first referrers' ids)
REFERRERS: tuple[tuple[str, Callable[[str], sa.Select[Any]]], ...] = (
    ("key", _keys_using),
    ("route", _routes_using),
)


async def referrers(connection: AsyncConnection, setting_id: str) -> list[str]:
    """Up to SHOWN of each kind of live object referring to the setting, as "key <id>"."""
    found: list[str] = []
    for kind, query in REFERRERS:
        found += [f"{kind} {row[0]}" for row in await connection.execute(query(setting_id))]
    return found


async def lock_settings(connection: AsyncConnection, field: str, ids: Sequence[str]) -> None:
    """Hold the live settings named until the transaction ends; a 400 naming any missing one."""
    if not ids:
        return
    query = (
        sa.select(provider_settings.c.setting_id)
        .where(provider_settings.c.setting_id.in_(ids), provider_settings.c.deleted_at.is_(None))
        .order_by(provider_settings.c.setting_id)  # one lock order: no deadlock between writers
        .with_for_update(read=True)
    )
    present = {str(row[0]) for row in await connection.execute(query)}
    missing = [setting_id for setting_id in ids if setting_id not in present]
    if missing:
        raise InvalidInput({field: [f"no provider setting with id {i}" for i in missing]})
