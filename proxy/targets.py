"""Resolve target: which of its provider settings a key's call uses, and so where it goes."""

from __future__ import annotations

import random

from proxy.errors import ProxyError, model_not_allowed, no_provider_setting
from proxy.provider_settings import SettingSnapshot
from proxy.providers import ADAPTERS_BY_NAME, OPENAI, Provider, Target
from shared.config import Settings
from shared.models import Key, ProviderSetting


class Targets:
    """Each setting's target, built once per version of the setting."""

    def __init__(self, settings: Settings, snapshot: SettingSnapshot) -> None:
        self._settings = settings
        self._snapshot = snapshot
        self.default = OPENAI.default_target(settings)
        self._built: dict[str, Target] = {}

    def of(self, provider: Provider, key: Key, setting_name: str = "") -> Target:
        """The target of a key's call on `provider` (the path names the setting of some)."""
        if not key.setting_ids:
            if provider.needs_setting:
                raise no_provider_setting(provider.name)
            return self.default
        snapshot = self._snapshot
        if setting_name:
            setting = snapshot.by_name(setting_name)
            if (
                setting is None
                or setting.provider != provider.name
                or setting.setting_id not in key.setting_ids
            ):
                raise no_provider_setting(provider.name, setting_name)
            return self._target(provider, setting)
        usable = [
            setting
            for setting_id in key.setting_ids
            if (setting := snapshot.by_id(setting_id)) is not None
            and setting.provider == provider.name
        ]
        if not usable:
            raise no_provider_setting(provider.name)
        chosen = random.choice(usable) if key.rotation_enabled else usable[0]
        return self._target(provider, chosen)

    def of_step(self, provider: Provider, key: Key, setting_id: str | None) -> Target:
        """The target of a route step for a key: the step's own setting, which the key must
        hold, or the one the key's call on `provider` would use."""
        if not setting_id:
            return self.of(provider, key)
        setting = self._snapshot.by_id(setting_id)
        if (
            setting is None
            or setting.provider != provider.name
            or setting_id not in key.setting_ids
        ):
            raise no_provider_setting(provider.name, setting.name if setting else setting_id)
        return self._target(provider, setting)

    def of_job(self, setting_id: str) -> Target | None:
        """Where a job created through `setting_id` is read; None while that setting is unknown."""
        if not setting_id:
            return self.default
        setting = self._snapshot.by_id(setting_id)
        provider = ADAPTERS_BY_NAME.get(setting.provider) if setting is not None else None
        if setting is None or provider is None:
            return None
        return self._target(provider, setting)

    def _target(self, provider: Provider, setting: ProviderSetting) -> Target:
        built = self._built.get(setting.setting_id)
        if built is not None and built.setting is setting:
            return built
        try:
            built = provider.target(setting, self._settings)
        except KeyError as missing:  # keymgmt requires these fields: a setting written otherwise
            raise ProxyError(
                502,
                f"provider setting {setting.name!r} lacks {missing}",
                "server_error",
                "provider_setting_incomplete",
            ) from None
        self._built[setting.setting_id] = built
        return built


def require_model_allowed(target: Target, model: str) -> None:
    setting = target.setting
    if setting is not None and not setting.allows(model):
        raise model_not_allowed(model, setting.name)
