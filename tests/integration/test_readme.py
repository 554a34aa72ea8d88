"""The README's examples, walked in order against `make demo`: the README cannot drift from what
works. Every fenced block after a `<!-- walk -->` line runs: `sh` blocks in bash (each curl must
answer 2xx), `python` blocks with the venv's interpreter, a `json` block is the shape the
previous command printed. Addresses and ids are the demo's; nothing else is changed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import banner  # deploy/local, on the path by tests/conftest.py
import pytest

from tests.integration.test_launcher import (
    DEMO_REPLY,
    ROOT,
    STOP_TIMEOUT,
    _tail,
    _wait_ready,
    data_dir,
    started_demo,
)

__all__ = ["data_dir"]  # the fixture, shared with the launcher test

MARKER = "<!-- walk -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
README_KEYMGMT, README_PROXY = "http://localhost:8001", banner.README_PROXY_URL
PLACEHOLDER_ID = re.compile(r"[0-9a-f]{4,8}-…|[0-9a-f]{4}…")
UUID = re.compile(r'"keyId":\s*"([0-9a-f-]{36})"')
PAUSE = 1.0  # between two steps, as a person reading along takes at least
# Each curl prints its body, then fails the block on a status of 400 or more.
CURL_WRAPPER = """
curl() {
  local status
  status=$(command curl -sS -o "$WALK_BODY" -w '%{http_code}' "$@") || return 1
  cat "$WALK_BODY"; echo
  [ "$status" -lt 400 ] || { echo "curl $*: HTTP $status" >&2; return 1; }
}
"""


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def walked_blocks(readme: str) -> list[Block]:
    blocks = []
    for part in readme.split(MARKER)[1:]:
        match = FENCE.search(part)
        assert match, f"{MARKER} is not followed by a fenced block"
        blocks.append(Block(match.group(1), match.group(2)))
    return blocks


def json_shape(text: str) -> dict[str, Any]:
    return dict(json.loads(text.replace("\n", " ")))


@dataclass
class Walker:
    keymgmt_url: str
    proxy_url: str
    scratch: Path
    key_id: str = ""
    printed: str = ""

    def localise(self, text: str) -> str:
        text = text.replace(README_KEYMGMT, self.keymgmt_url).replace(README_PROXY, self.proxy_url)
        return PLACEHOLDER_ID.sub(self.key_id, text) if self.key_id else text

    def step(self, block: Block) -> None:
        if block.language == "json":
            expected, printed = json_shape(block.text), json_shape(self.printed)
            assert set(printed) == set(expected), self.printed
            return
        if block.language == "sh":
            script = CURL_WRAPPER + "set -euo pipefail\n" + self.localise(block.text)
            command = ["bash", "-c", script]
        else:
            assert block.language == "python", block
            command = [sys.executable, "-c", self.localise(block.text)]
        env = {"PATH": "/usr/bin:/bin", "ADMIN_PASS": "", "WALK_BODY": str(self.scratch / "body")}
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{block.text}\n--- stdout\n{result.stdout}\n{result.stderr}"
        self.printed = result.stdout
        if not self.key_id and (found := UUID.search(result.stdout)):
            self.key_id = found.group(1)


SDK_EXAMPLES = (banner.SDK_EXAMPLE, banner.ANTHROPIC_EXAMPLE, banner.AZURE_EXAMPLE)


def test_the_banner_shows_the_readmes_calls() -> None:
    blocks = walked_blocks((ROOT / "README.md").read_text())
    shown = banner.examples(README_KEYMGMT, README_PROXY, {}, admin_pass=False, demo=True)
    curls = [curl for _, curl in banner.PROVIDER_EXAMPLES.values()]
    assert Block("sh", "".join(curls)) in blocks
    for example in SDK_EXAMPLES:
        assert Block("python", example) in blocks, example
    for example in [*SDK_EXAMPLES, *curls]:
        assert textwrap.indent(example, "  ") in shown, example


@pytest.mark.slow
def test_the_readme_walks_against_make_demo(data_dir: Path) -> None:
    blocks = walked_blocks((ROOT / "README.md").read_text())
    assert [b.language for b in blocks[:3]] == ["sh", "json", "python"], "quick start first"
    with started_demo(data_dir) as demo:
        try:
            keymgmt_url, _, proxy_url, _ = _wait_ready(demo.launcher, demo.log).groups()
            walker = Walker(keymgmt_url, proxy_url, data_dir)
            for block in blocks:
                time.sleep(PAUSE)
                walker.step(block)
                if block.text in SDK_EXAMPLES:  # a call through the proxy
                    assert walker.printed == DEMO_REPLY + "\n", block.text
            demo.launcher.send_signal(signal.SIGINT)
            assert demo.launcher.wait(STOP_TIMEOUT) == 0
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- launcher log\n{_tail(demo.log)}") from None


def test_placeholders_are_replaced_only_where_they_stand() -> None:
    walker = Walker("http://127.0.0.1:1", "http://127.0.0.1:2", Path("/tmp"), key_id="ID")
    text = textwrap.dedent(f"""\
        curl {README_KEYMGMT}/k/6c0e4d0e-… "$K?keyIds=6c0e4d0e-…&keyIds=91a2…"
        client = OpenAI(base_url="{README_PROXY}/api/providers/openai/v1")
    """)
    assert walker.localise(text) == textwrap.dedent("""\
        curl http://127.0.0.1:1/k/ID "$K?keyIds=ID&keyIds=ID"
        client = OpenAI(base_url="http://127.0.0.1:2/api/providers/openai/v1")
    """)
