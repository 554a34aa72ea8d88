"""The provider settings the proxy holds: by id and by name, rebound in one assignment."""

from __future__ import annotations

from collections.abc import Iterable

from shared.models import ProviderSetting


class SettingSnapshot:
    def __init__(self) -> None:
        self._by_id: dict[str, ProviderSetting] = {}
        self._by_name: dict[str, ProviderSetting] = {}

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

    def apply(self, changed: Iterable[ProviderSetting]) -> None:
        by_id = dict(self._by_id)
        for setting in changed:
            if setting.deleted:
                by_id.pop(setting.setting_id, None)
            else:
                by_id[setting.setting_id] = setting
        self.replace(by_id.values())
