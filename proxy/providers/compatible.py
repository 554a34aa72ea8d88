"""Servers that speak the OpenAI API under another vendor: vLLM, DeepInfra, and any other."""

from __future__ import annotations

from proxy.providers.base import Provider
from shared.config import Settings
from shared.models import ProviderSetting

DEEPINFRA_BASE_URL = "https://api.deepinfra.com/v1/openai"


class VLLM(Provider):
    name = "vllm"
    price_provider = None  # self-hosted models: priced by name, by the setting or PRICING_FILE

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        return setting.options["url"].rstrip("/") + "/v1"  # `url` is the server's root


class DeepInfra(Provider):
    name = "deepinfra"
    price_provider = None  # not in the price library under its own id

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        return DEEPINFRA_BASE_URL


class OpenAICompatible(Provider):
    """Ollama, Groq, Together, Mistral, Gemini's OpenAI endpoint...: the setting names the path."""

    name = "openai_compatible"
    price_provider = None

    def paths(self) -> tuple[str, ...]:
        return ("/api/custom/providers/{setting_name}/v1/{tail:.*}",)

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        return setting.options["baseUrl"]
