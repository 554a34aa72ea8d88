"""Provider settings in Postgres, with their secrets sealed (shared.secrets).

Like keys, every write moves `updated_at`, a deletion leaves a tombstone, and each write announces
itself on the change feed in its own transaction: the proxies' snapshots see every change.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.errors import (
    ApiError,
    EncryptionKeyMissing,
    InvalidInput,
    SettingExists,
    SettingInUse,
    SettingNotFound,
)
from keymgmt.references import referrers
from keymgmt.store import Store, announcement
from shared.changes import SETTING
from shared.config import PostgresSettings
from shared.db import provider_settings
from shared.secrets import SecretBox
from shared.setting_schemas import SECRET, check_setting

HINT_FROM = 8  # shorter secrets show no characters at all


@dataclass(frozen=True, slots=True)
class StoredSetting:
    """A setting as keymgmt reads it back: the secret stays sealed, only its hint is known."""

    setting_id: str
    provider: str
    name: str
    options: Mapping[str, str]
    has_secret: bool
    secret_hint: str
    allowed_models: tuple[str, ...]
    cost_map: Mapping[str, Mapping[str, float]]
    created_at: float
    updated_at: float


def _stored(row: Any) -> StoredSetting:
    return StoredSetting(
        setting_id=str(row.setting_id),
        provider=row.provider,
        name=row.name,
        options=row.options,
        has_secret=row.secret is not None,
        secret_hint=row.secret_hint,
        allowed_models=tuple(row.allowed_models),
        cost_map=row.cost_map,
        created_at=row.created_at.timestamp(),
        updated_at=row.updated_at.timestamp(),
    )


def _live(setting_id: str) -> sa.Select[Any]:
    return provider_settings.select().where(
        provider_settings.c.setting_id == setting_id, provider_settings.c.deleted_at.is_(None)
    )


class SettingStore(Store):
    def __init__(
        self, engine: AsyncEngine, settings: PostgresSettings, box: SecretBox | None
    ) -> None:
        super().__init__(engine, settings)
        self._box = box

    def _conflict(self, error: exc.IntegrityError) -> ApiError:
        return SettingExists("a provider setting with this name exists; names are unique")

    def _seal(self, setting_id: str, secret: str | None) -> dict[str, Any]:
        if secret is None:
            return {"secret": None, "secret_hint": ""}
        if self._box is None:
            raise EncryptionKeyMissing(
                "SETTINGS_ENCRYPTION_KEY is not set: keymgmt cannot store a secret (apikey)"
            )
        hint = secret[-4:] if len(secret) >= HINT_FROM else ""
        return {"secret": self._box.encrypt(secret, setting_id), "secret_hint": hint}

    async def create(self, fields: Mapping[str, Any]) -> StoredSetting:
        setting_id = str(uuid.uuid4())
        given = {name: value for name, value in fields["setting"].items() if value is not None}
        now = sa.func.now()
        values = {
            "setting_id": setting_id,
            "provider": fields["provider"],
            "name": fields["name"],
            "options": {name: value for name, value in given.items() if name != SECRET},
            "allowed_models": fields.get("allowedModels", []),
            "cost_map": fields.get("costMap", {}),
            "created_at": now,
            "updated_at": now,
            **self._seal(setting_id, given.get(SECRET)),
        }
        async with self.transaction(write=True) as connection:
            insert = provider_settings.insert().values(values).returning(provider_settings)
            row = (await connection.execute(insert)).one()
            await connection.execute(announcement(SETTING, setting_id, row.updated_at))
        return _stored(row)

    async def get(self, setting_id: str) -> StoredSetting:
        rows = await self.fetch(_live(setting_id))
        if not rows:
            raise SettingNotFound(f"no provider setting with id {setting_id}")
        return _stored(rows[0])

    async def find(self, setting_ids: list[str] | None) -> list[StoredSetting]:
        """The live settings with these ids, or every live one (None), by name."""
        query = provider_settings.select().where(provider_settings.c.deleted_at.is_(None))
        if setting_ids is not None:
            query = query.where(provider_settings.c.setting_id.in_(setting_ids))
        return [_stored(row) for row in await self.fetch(query.order_by(provider_settings.c.name))]

    async def update(self, setting_id: str, fields: Mapping[str, Any]) -> StoredSetting:
        async with self.transaction(write=True) as connection:
            row = (await connection.execute(_live(setting_id).with_for_update())).one_or_none()
            if row is None:
                raise SettingNotFound(f"no provider setting with id {setting_id}")
            if fields.get("provider", row.provider) != row.provider:
                raise InvalidInput(
                    {"provider": [f"is {row.provider} and cannot change; create a new setting"]}
                )
            values: dict[str, Any] = {
                column: fields[name]
                for name, column in (
                    ("name", "name"),
                    ("allowedModels", "allowed_models"),
                    ("costMap", "cost_map"),
                )
                if name in fields
            }
            patch = fields.get("setting", {})
            if patch:
                merged = {**row.options, SECRET: row.secret, **patch}
                try:
                    check_setting(row.provider, merged)
                except ValidationError as error:
                    raise InvalidInput(error.normalized_messages()) from None
                values["options"] = {
                    name: value
                    for name, value in merged.items()
                    if name != SECRET and value is not None
                }
                if SECRET in patch:
                    values.update(self._seal(setting_id, patch[SECRET]))
            values["updated_at"] = sa.func.now()
            update = (
                provider_settings.update()
                .where(provider_settings.c.setting_id == setting_id)
                .values(values)
                .returning(provider_settings)
            )
            updated = (await connection.execute(update)).one()
            await connection.execute(announcement(SETTING, setting_id, updated.updated_at))
        return _stored(updated)

    async def delete(self, setting_id: str) -> None:
        async with self.transaction(write=True) as connection:
            row = (await connection.execute(_live(setting_id).with_for_update())).one_or_none()
            if row is None:
                raise SettingNotFound(f"no provider setting with id {setting_id}")
            using = await referrers(connection, setting_id)
            if using:
                raise SettingInUse(
                    f"provider setting {setting_id} is in use by {', '.join(using)}"
                    "; change or delete those first"
                )
            now = sa.func.now()
            deleted = (
                await connection.execute(
                    provider_settings.update()
                    .where(provider_settings.c.setting_id == setting_id)
                    .values(deleted_at=now, updated_at=now)
                    .returning(provider_settings.c.updated_at)
                )
            ).one()
            await connection.execute(announcement(SETTING, setting_id, deleted.updated_at))
