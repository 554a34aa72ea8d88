"""The provider settings the proxy holds: by id and by name, rebound in one assignment, and how
they are read from Postgres (proxy.snapshot's refresher keeps them current)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.snapshot import Source
from shared.models import ProviderSetting
from shared.secrets import SecretBox, SecretUnreadable

log = logging.getLogger("gateway.snapshot")


class SettingSnapshot:
    def __init__(self) -> None:
        self._by_id: dict[str, ProviderSetting] = {}
        self._by_name: dict[str, ProviderSetting] = {}
        self.loaded = False
        self.refreshed_at = 0.0  # monotonic time of the last successful read

    def __len__(self) -> int:
        return len(self._by_id)

    def by_id(self, setting_id: str) -> ProviderSetting | None:
        return self._by_id.get(setting_id)

    def by_name(self, name: str) -> ProviderSetting | None:
        return self._by_name.get(name)

    def replace(self, live: Iterable[ProviderSetting]) -> None:
        by_id = {setting.setting_id: setting for setting in live if not setting.deleted}
        self._by_id = by_id
        self._by_name = {setting.name: setting for setting in by_id.values()}
        self.loaded = True

    def apply(self, changed: Iterable[ProviderSetting]) -> None:
        by_id = dict(self._by_id)
        for setting in changed:
            if setting.deleted:
                by_id.pop(setting.setting_id, None)
            else:
                by_id[setting.setting_id] = setting
        self.replace(by_id.values())


class SettingRows:
    """Rows of provider_settings as ProviderSettings, their secrets opened.

    A setting whose secret cannot be opened (no SETTINGS_ENCRYPTION_KEY here, another key, or a
    changed row) is held as deleted: no call goes upstream with it. One warning line for each
    such version of a setting, never the secret nor its sealed bytes.
    """

    def __init__(self, box: SecretBox | None) -> None:
        self._box = box
        self._warned: set[tuple[str, float]] = set()

    def __call__(self, row: Any) -> ProviderSetting:
        (setting_id, provider, name, options, sealed, allowed, cost_map, updated, deleted) = row
        secret = ""
        if sealed is not None and not deleted:
            try:
                secret = self._open(setting_id, sealed)
            except SecretUnreadable as error:
                self._warn(setting_id, updated, name, str(error))
                deleted = True
        return ProviderSetting(
            setting_id=setting_id,
            provider=provider,
            name=name,
            secret=secret,
            options=orjson.loads(options),
            allowed_models=frozenset(allowed),
            cost_map=orjson.loads(cost_map),
            updated_at=updated,
            deleted=deleted,
        )

    def _open(self, setting_id: str, sealed: bytes) -> str:
        if self._box is None:
            raise SecretUnreadable("SETTINGS_ENCRYPTION_KEY is not set here")
        return self._box.decrypt(sealed, setting_id)

    def _warn(self, setting_id: str, updated: float, name: str, reason: str) -> None:
        if (setting_id, updated) not in self._warned:
            self._warned.add((setting_id, updated))
            log.warning(
                "provider setting skipped: its secret cannot be opened (%s)",
                reason,
                extra={"setting_id": setting_id, "setting_name": name},
            )


SETTINGS_QUERY = """
    SELECT setting_id::text, provider, name, options::text, secret, allowed_models, cost_map::text,
        extract(epoch FROM updated_at)::float8, deleted_at IS NOT NULL
    FROM provider_settings"""


def setting_source(box: SecretBox | None) -> Source[ProviderSetting]:
    return Source(
        "provider setting",
        "settings",
        SETTINGS_QUERY,
        "provider_settings.setting_id",
        SettingRows(box),
        lambda setting: setting.setting_id,
    )
