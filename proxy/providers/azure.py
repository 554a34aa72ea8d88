"""Azure OpenAI: deployment URLs with an api-version, and the v1 API; the key in `api-key`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from proxy.paths import normalised_endpoint
from proxy.providers.base import STREAM_USAGE_ENDPOINTS, Provider, Target
from shared.config import Settings
from shared.models import ProviderSetting

if TYPE_CHECKING:
    from proxy.calls import Call

DEPLOYMENTS = "deployments/"
V1 = "v1/"
# The first api-version that takes `stream_options`; older ones answer it with a 400.
STREAM_OPTIONS_SINCE = "2024-09-01"
# What a route's step calls a deployment with when neither the step nor its setting says.
DEFAULT_API_VERSION = "2024-10-21"


def api_version(query: str) -> str:
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "api-version":
            return value
    return ""


class Azure(Provider):
    name = "azure"

    def paths(self) -> tuple[str, ...]:
        return ("/api/providers/azure/openai/{tail:.*}",)

    def endpoint(self, tail: str) -> tuple[str, str]:
        upstream_path = normalised_endpoint(tail)
        if upstream_path.startswith(DEPLOYMENTS):
            return upstream_path.split("/", 2)[2] if upstream_path.count(
                "/"
            ) > 1 else "", upstream_path
        return upstream_path.removeprefix(V1), upstream_path

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        options = setting.options
        root = options.get("endpoint") or f"https://{options['resourceName']}.openai.azure.com"
        return root.rstrip("/") + "/openai"

    def credential(self, setting: ProviderSetting) -> dict[str, str]:
        return {"api-key": setting.secret}

    def step_path(
        self, target: Target, tail: str, model: str, params: Mapping[str, str]
    ) -> tuple[str, str]:
        """The deployment layout: the step's deploymentId (else its model) and apiVersion (else
        the setting's, else DEFAULT_API_VERSION)."""
        path = f"{DEPLOYMENTS}{params.get('deploymentId') or model}/{tail}"
        given = params.get("apiVersion")
        query = self.upstream_query(target, path, f"api-version={given}" if given else "")
        return path, query or f"api-version={DEFAULT_API_VERSION}"

    def upstream_query(self, target: Target, upstream_path: str, query: str) -> str:
        """The client's api-version; the setting's only when the client sends none."""
        configured = target.setting.options.get("apiVersion", "") if target.setting else ""
        if not configured or not upstream_path.startswith(DEPLOYMENTS) or api_version(query):
            return query
        given = f"api-version={configured}"
        return f"{query}&{given}" if query else given

    def default_model(self, endpoint: str, upstream_path: str) -> str:
        if upstream_path.startswith(DEPLOYMENTS):
            return upstream_path.split("/", 2)[1]
        return ""

    def asks_stream_usage(self, call: Call) -> bool:
        if call.endpoint not in STREAM_USAGE_ENDPOINTS:
            return False
        if not call.upstream_path.startswith(DEPLOYMENTS):
            return True  # the v1 API takes it
        return api_version(call.upstream_query)[:10] >= STREAM_OPTIONS_SINCE
