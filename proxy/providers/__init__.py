"""The provider adapters, one small module each; the request path asks them, never their names."""

from proxy.providers.anthropic import Anthropic
from proxy.providers.azure import Azure
from proxy.providers.base import Provider, Target
from proxy.providers.compatible import VLLM, DeepInfra, OpenAICompatible
from proxy.providers.openai import OpenAI

OPENAI = OpenAI()
ADAPTERS: tuple[Provider, ...] = (
    OPENAI,
    Anthropic(),
    Azure(),
    VLLM(),
    DeepInfra(),
    OpenAICompatible(),
)
ADAPTERS_BY_NAME = {provider.name: provider for provider in ADAPTERS}

__all__ = ["ADAPTERS", "ADAPTERS_BY_NAME", "OPENAI", "Provider", "Target"]
