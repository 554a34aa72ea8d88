"""`make demo` from nothing: the launcher starts everything, serves a call, and Ctrl-C leaves
no process and no listening port behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import services

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^gateway ready: keymgmt (http://\S+:(\d+)) proxy (http://\S+:(\d+))$", re.M)
UPSTREAM = re.compile(r"fake upstream at http://[^:]+:(\d+)/")
DEMO_REPLY = "Hello from the fake upstream."
START_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0
# Settings a developer's shell could carry that would make the launcher use something else.
CONFIGURED = ("POSTGRESQL_", "REDIS_", "OPENAI_", "KEYMGMT_", "PROXY_", "LOCAL_", "SETTINGS_")


def _session_members(sid: int) -> dict[int, str]:
    """Live processes of a session (pid: command name); zombies hold nothing, so not them."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: the fields follow its last ")".
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == sid and state != "Z":
            members[int(entry.name)] = name
    return members


def _kill_session(launcher: subprocess.Popen[bytes]) -> None:
    """SIGKILL everything the launcher started, whatever state a failed test left it in."""
    deadline = time.monotonic() + 10
    while (members := _session_members(launcher.pid)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    launcher.kill()
    launcher.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its 0700 parents would stop a Postgres run as user postgres.
    with tempfile.TemporaryDirectory(prefix="gateway-launcher-") as directory:
        path = Path(directory)
        path.chmod(0o755)
        yield path


def _launcher_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIGURED)}
    env.pop("ADMIN_PASS", None)
    env.update({name: str(port) for name, port in ports.items()})
    env["IN_MEMORY_DB_UPDATE_INTERVAL"] = "200ms"
    return env


def _wait_ready(launcher: subprocess.Popen[bytes], log: Path) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while not (ready := READY.search(log.read_text(errors="replace"))):
        assert launcher.poll() is None, f"launcher exited early:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"not ready after {START_TIMEOUT:.0f} s:\n{_tail(log)}"
        time.sleep(0.1)
    return ready


def _put(url: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    # No proxy handler: an http_proxy in the environment must not intercept localhost.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200


def _create_key(keymgmt_url: str) -> str:
    raw = f"sk-launcher-{uuid.uuid4().hex}"
    _put(f"{keymgmt_url}/api/key-management/keys", {"name": "launcher-test", "key": raw})
    return raw


def _chat_once_key_is_loaded(client: openai.OpenAI) -> str | None:
    """The first reply, retried while the proxy's snapshot does not know the key yet."""
    deadline = time.monotonic() + 10
    while True:
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
            )
            return reply.choices[0].message.content
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Demo:
    launcher: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]


@contextlib.contextmanager
def started_demo(data_dir: Path) -> Iterator[Demo]:
    """`make demo` on free ports, in a session of its own; killed whole on the way out."""
    ports = {
        name: services.free_port()
        for name in ("KEYMGMT_PORT", "PROXY_PORT", "LOCAL_POSTGRES_PORT", "LOCAL_REDIS_PORT")
    }
    log = data_dir / "launcher.log"
    with log.open("wb") as output:
        # A file, not a pipe: the services inherit it and would block on a full pipe.
        launcher = subprocess.Popen(
            [sys.executable, "deploy/local/run.py", "--demo", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=_launcher_env(ports),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its session id then names every descendant
        )
    try:
        yield Demo(launcher, log, ports)
    finally:
        _kill_session(launcher)


def test_demo_from_nothing_serves_and_stops_cleanly(data_dir: Path) -> None:
    with started_demo(data_dir) as demo:
        launcher, log, ports = demo.launcher, demo.log, demo.ports
        ready = _wait_ready(launcher, log)
        keymgmt_url, keymgmt_port, proxy_url, proxy_port = ready.groups()
        assert (int(keymgmt_port), int(proxy_port)) == (ports["KEYMGMT_PORT"], ports["PROXY_PORT"])
        upstream = UPSTREAM.search(log.read_text())
        assert upstream, _tail(log)
        ports["fake upstream"] = int(upstream.group(1))

        raw_key = _create_key(keymgmt_url)
        # The launcher made a SETTINGS_ENCRYPTION_KEY, so a setting's secret can be stored.
        clear = f"sk-launcher-secret-{uuid.uuid4().hex}"
        setting = {"provider": "openai", "name": "launcher", "setting": {"apikey": clear}}
        _put(f"{keymgmt_url}/api/provider-settings", setting)
        assert (data_dir / "settings-encryption-key").stat().st_mode & 0o077 == 0
        with openai.OpenAI(
            base_url=f"{proxy_url}/api/providers/openai/v1", api_key=raw_key, max_retries=0
        ) as client:
            assert _chat_once_key_is_loaded(client) == DEMO_REPLY
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Say hello"}],
                stream=True,
            )
            pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
            assert "".join(pieces) == DEMO_REPLY

        launcher.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends
        assert launcher.wait(STOP_TIMEOUT) == 0, _tail(log)
        assert _session_members(launcher.pid) == {}, _tail(log)
        listening = {
            name: port for name, port in ports.items() if services.reachable(services.HOST, port)
        }
        assert listening == {}, _tail(log)
        key = (data_dir / "settings-encryption-key").read_text().strip()
        assert key not in log.read_text() and clear not in log.read_text()


PROVIDERS_START, PROVIDERS_END = "Every provider works too", "Postgres and Redis of this run"
BANNER_END = "Press Ctrl-C to stop."
PROVIDER_HEADING = re.compile(r"^(\w+):$", re.M)
ASK = """\
reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
)
print(reply.choices[0].message.content)
"""


def _banner(demo: Demo) -> str:
    """The log up to the end of the banner, which follows the ready line."""
    _wait_ready(demo.launcher, demo.log)
    deadline = time.monotonic() + START_TIMEOUT
    while BANNER_END not in (log := demo.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no banner:\n{_tail(demo.log)}"
        time.sleep(0.1)
    return log


def provider_blocks(banner: str) -> dict[str, tuple[str, str]]:
    """provider → (its python lines, its curl command), as the banner printed them."""
    section = banner[banner.index(PROVIDERS_START) : banner.index(PROVIDERS_END)]
    parts = PROVIDER_HEADING.split(section)[1:]
    blocks = {}
    for provider, body in zip(parts[::2], parts[1::2], strict=True):
        python, curl = textwrap.dedent(body).strip("\n").split("\ncurl ")
        blocks[provider] = (python + "\n", "curl " + curl.strip() + "\n")
    return blocks


def _run(command: list[str]) -> str:
    # A clean environment: what a newcomer's shell has, not this test's.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _python_works(lines: str) -> None:
    if "print(" not in lines:  # a set-up line alone: make the call it sets up
        lines = f"from openai import OpenAI\n{lines}{ASK}"
    assert _run([sys.executable, "-c", lines]) == DEMO_REPLY + "\n", lines


def _curl_works(command: str) -> None:
    printed = _run(["bash", "-c", command.rstrip("\n") + " -sS -w '\\n%{http_code}'"])
    body, status = printed.rsplit("\n", 1)
    assert status.startswith("2") and DEMO_REPLY in body, f"{command}\n{printed}"


@pytest.mark.slow
def test_the_banners_provider_calls_work_and_again_after_a_restart(data_dir: Path) -> None:
    for run in ("first", "restarted"):
        with started_demo(data_dir) as demo:
            blocks = provider_blocks(_banner(demo))
            providers = ["openai", "anthropic", "azure", "vllm", "openai_compatible"]
            assert sorted(blocks) == sorted(providers), (run, _tail(demo.log))
            for python, curl in blocks.values():
                _python_works(python)
                _curl_works(curl)
            demo.launcher.send_signal(signal.SIGINT)
            assert demo.launcher.wait(STOP_TIMEOUT) == 0, (run, _tail(demo.log))
