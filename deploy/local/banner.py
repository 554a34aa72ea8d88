"""What `make run` and `make demo` print once the gateway is up: the README's first steps."""

from __future__ import annotations

import json
import textwrap

# The README's first call, word for word but for the address (tests/integration/test_readme.py).
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


def examples(keymgmt_url: str, proxy_url: str, env: dict[str, str], admin_pass: bool) -> str:
    """The first key, the first call, and the settings of this run's databases."""
    admin = ' -H "X-API-KEY: $ADMIN_PASS"' if admin_pass else ""
    body = json.dumps(EXAMPLE_KEY, separators=(",", ":"))
    databases = " ".join(f"{name}={env[name]}" for name in DATABASE_SETTINGS if name in env)
    return f"""
Create a key:

  curl -X PUT {keymgmt_url}/api/key-management/keys{admin} \\
    -H 'Content-Type: application/json' \\
    -d '{body}'

Within a second every proxy replica accepts it:

{textwrap.indent(SDK_EXAMPLE.replace(README_PROXY_URL, proxy_url), "  ")}
Postgres and Redis of this run, for commands run beside it (python -m keymgmt migrate):

  {databases}

Press Ctrl-C to stop.
"""
