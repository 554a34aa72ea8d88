"""What `make run` and `make demo` print once the gateway is up: the README's first steps."""

from __future__ import annotations

import json
import textwrap

from demo import AZURE_API_VERSION, DEMO_KEY, OPENAI_COMPATIBLE_NAME, demo_settings

# The README's calls, word for word but for the address (tests/integration/test_readme.py).
README_PROXY_URL = "http://localhost:8002"
SDK_EXAMPLE = f"""\
from openai import OpenAI

client = OpenAI(base_url="{README_PROXY_URL}/api/providers/openai/v1", api_key="my-secret-key")
stream = client.chat.completions.create(
    model="gpt-4o-mini", stream=True, messages=[{{"role": "user", "content": "Say hello"}}]
)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="")
print()
"""
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
ANTHROPIC_EXAMPLE = f"""\
from anthropic import Anthropic

client = Anthropic(base_url="{README_PROXY_URL}/api/providers/anthropic", api_key="{DEMO_KEY}")
message = client.messages.create(
    model="{ANTHROPIC_MODEL}", max_tokens=100,
    messages=[{{"role": "user", "content": "Say hello"}}],
)
print(message.content[0].text)
"""
AZURE_EXAMPLE = f"""\
from openai import AzureOpenAI

client = AzureOpenAI(
    azure_endpoint="{README_PROXY_URL}/api/providers/azure", api_version="{AZURE_API_VERSION}",
    api_key="{DEMO_KEY}",
)
reply = client.chat.completions.create(
    model="gpt-4o-mini",  # on Azure, the deployment's name
    messages=[{{"role": "user", "content": "Say hello"}}],
)
print(reply.choices[0].message.content)
"""


def _openai_sdk(base_path: str) -> str:
    return f'client = OpenAI(base_url="{README_PROXY_URL}{base_path}", api_key="{DEMO_KEY}")\n'


def _curl(path: str, headers: tuple[str, ...], body: dict[str, object]) -> str:
    hello = {**body, "messages": [{"role": "user", "content": "Say hello"}]}
    options = " ".join(f"-H '{header}'" for header in (*headers, "Content-Type: application/json"))
    return (
        f"curl '{README_PROXY_URL}{path}' \\\n"
        f"  {options} \\\n"
        f"  -d '{json.dumps(hello, separators=(',', ':'))}'\n"
    )


BEARER = (f"Authorization: Bearer {DEMO_KEY}",)
# provider → (its SDK set-up, a call with curl), for the key that `make demo` makes.
PROVIDER_EXAMPLES = {
    "openai": (
        _openai_sdk("/api/providers/openai/v1"),
        _curl("/api/providers/openai/v1/chat/completions", BEARER, {"model": "gpt-4o-mini"}),
    ),
    "anthropic": (
        ANTHROPIC_EXAMPLE,
        _curl(
            "/api/providers/anthropic/v1/messages",
            (f"x-api-key: {DEMO_KEY}", "anthropic-version: 2023-06-01"),
            {"model": ANTHROPIC_MODEL, "max_tokens": 100},
        ),
    ),
    "azure": (
        AZURE_EXAMPLE,
        _curl(
            "/api/providers/azure/openai/deployments/gpt-4o-mini/chat/completions"
            f"?api-version={AZURE_API_VERSION}",
            (f"api-key: {DEMO_KEY}",),
            {},
        ),
    ),
    "vllm": (
        _openai_sdk("/api/providers/vllm/v1"),
        _curl(
            "/api/providers/vllm/v1/chat/completions",
            BEARER,
            {"model": "meta-llama/Llama-3.1-8B-Instruct"},
        ),
    ),
    "openai_compatible": (
        _openai_sdk(f"/api/custom/providers/{OPENAI_COMPATIBLE_NAME}/v1"),
        _curl(
            f"/api/custom/providers/{OPENAI_COMPATIBLE_NAME}/v1/chat/completions",
            BEARER,
            {"model": "llama3.2"},
        ),
    ),
}
EXAMPLE_KEY = {
    "name": "my-first-key",
    "key": "my-secret-key",
    "rateLimitOverTime": 60,
    "rateLimitUnit": "m",
    "costLimitInUsd": 10,
}
DATABASE_SETTINGS = (
    "POSTGRESQL_HOSTS", "POSTGRESQL_PORT", "POSTGRESQL_USERNAME", "REDIS_HOSTS", "REDIS_PORT"
)  # fmt: skip


def _indented(text: str, proxy_url: str) -> str:
    return textwrap.indent(text.replace(README_PROXY_URL, proxy_url), "  ")


def provider_examples(proxy_url: str) -> str:
    """Each provider of `make demo`: a block of its SDK set-up, a blank line, its curl call."""
    blocks = "\n".join(
        f"{provider}:\n{_indented(sdk, proxy_url)}\n{_indented(curl, proxy_url)}"
        for provider, (sdk, curl) in PROVIDER_EXAMPLES.items()
    )
    names = ", ".join(setting["name"] for setting in demo_settings(""))
    return f"""
Every provider works too, through the fake upstream, with the key {DEMO_KEY} that the demo made
(its settings: {names}):

{blocks}"""


def examples(
    keymgmt_url: str, proxy_url: str, env: dict[str, str], admin_pass: bool, demo: bool
) -> str:
    """The first key, the first call, each provider in a demo, this run's databases."""
    admin = ' -H "X-API-KEY: $ADMIN_PASS"' if admin_pass else ""
    body = json.dumps(EXAMPLE_KEY, separators=(",", ":"))
    databases = " ".join(f"{name}={env[name]}" for name in DATABASE_SETTINGS if name in env)
    providers = provider_examples(proxy_url) if demo else ""
    return f"""
Create a key:

  curl -X PUT {keymgmt_url}/api/key-management/keys{admin} \\
    -H 'Content-Type: application/json' \\
    -d '{body}'

Within a second every proxy replica accepts it:

{_indented(SDK_EXAMPLE, proxy_url)}{providers}
Postgres and Redis of this run, for commands run beside it (python -m keymgmt migrate):

  {databases}

Press Ctrl-C to stop.
"""
