"""OpenAI: the gateway's own credential from the environment, or a setting's."""

from __future__ import annotations

from proxy.providers.base import Provider, Target
from shared.config import Settings
from shared.models import ProviderSetting


def openai_credential(api_key: str, organization: str, project: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}"}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return headers


class OpenAI(Provider):
    name = "openai"
    needs_setting = False
    tracks_jobs = True

    def default_target(self, settings: Settings) -> Target:
        """Calls of a key without settings: OPENAI_API_KEY at OPENAI_BASE_URL."""
        credential = openai_credential(
            settings.openai_api_key, settings.openai_organization, settings.openai_project
        )
        return Target(self, None, settings.openai_base_url, credential)

    def credential(self, setting: ProviderSetting) -> dict[str, str]:
        options = setting.options
        return openai_credential(
            setting.secret, options.get("organization", ""), options.get("project", "")
        )
