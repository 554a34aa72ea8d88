"""The proxy process stays lean: it never imports what it does not use."""

from __future__ import annotations

import os
import subprocess
import sys

# Builds the proxy as `python -m proxy` does, reserves for a chat call as admission does, then
# names the top-level packages imported.
BUILD_PROXY = """
import sys
import proxy.__main__
from proxy.admission import reservation_nano
from proxy.app import create_app
from proxy.calls import CHAT, Call
from proxy.typedefs import PRICING, TARGETS
from shared.config import Settings
from shared.models import Key

app = create_app(Settings.from_env())
key = Key(key_id="k", name="", key_hash="h", created_at=0, updated_at=0, cost_limit_in_usd=1)
payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Grüße"}]}
call = Call("r", key, app[TARGETS].default, CHAT, b"", payload, model="gpt-4o-mini")
assert reservation_nano(call, app[PRICING]) > 0
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported_by_proxy(**environ: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_PROXY],
        env={**os.environ, "OPENAI_API_KEY": "sk-test", "STATSD_ADDRESS": "", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_proxy_does_without_sqlalchemy_and_alembic() -> None:
    assert not imported_by_proxy() & {"sqlalchemy", "alembic"}


def test_datadog_only_when_statsd_is_configured() -> None:
    assert "datadog" not in imported_by_proxy()
    assert "datadog" in imported_by_proxy(STATSD_ADDRESS="127.0.0.1:8125")


def test_reserving_loads_no_token_encoding() -> None:
    # tiktoken is imported where an encoding is loaded, and only there.
    assert "tiktoken" not in imported_by_proxy()
