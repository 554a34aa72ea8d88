"""The target of a key without provider settings, for tests that build calls by hand."""

from proxy.providers import OPENAI
from shared.config import Settings

OPENAI_TARGET = OPENAI.default_target(Settings())
