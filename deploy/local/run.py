"""Run the whole gateway in the foreground: `make run`, or `make demo` with a fake upstream.

Starts local Postgres and Redis under --data-dir unless POSTGRESQL_HOSTS / REDIS_HOSTS are
set (their data survives restarts), migrates, starts keymgmt and the proxy, and waits until
both are healthy. Ctrl-C or SIGTERM stops everything it started, in reverse order, so that
the services' last spend reaches Redis before Redis stops. Stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

import demo
import services
from banner import examples

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 30.0
START_TIMEOUT = 60.0
POLL_INTERVAL = 0.2
DEMO_API_KEY = "sk-demo-not-a-real-key"
PLACEHOLDER_API_KEY = "sk-placeholder-set-OPENAI_API_KEY"
WILDCARD_OR_LOOPBACK = {"", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"}
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ENCRYPTION_KEY_FILE = "settings-encryption-key"


class LaunchError(Exception):
    """Startup cannot go on; the message is shown as one line."""


class Interrupted(BaseException):
    """A stop signal: a BaseException, so that no `except Exception` swallows it."""


class Watched(Protocol):
    name: str

    @property
    def running(self) -> bool: ...

    def describe_exit(self) -> str: ...


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn so that even a SIGKILL of this launcher leaves no process behind."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, int(sig))


def _own_group(sig: signal.Signals) -> dict[str, Any]:
    # Its own process group: a terminal's Ctrl-C then reaches only us, and we stop the
    # children in order (services before Redis) instead of all at once.
    return {"process_group": 0, "preexec_fn": _die_with_parent(sig)}


class _Grouped(services._Server):
    """A local server in its own process group, watched like a Child."""

    def _popen_kwargs(self) -> dict[str, Any]:
        return {**super()._popen_kwargs(), **_own_group(self.stop_signal)}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def describe_exit(self) -> str:
        return f"{self.name} stopped"


class LocalPostgres(_Grouped, services.Postgres):
    pass


class LocalRedis(_Grouped, services.Redis):
    pass


class Child:
    """A Python child process (a service, the migration, the fake upstream)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            **_own_group(signal.SIGTERM),
        )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"{self.name} was killed by {signal.Signals(-code).name}"
        return f"{self.name} exited with code {code}"

    def kill(self) -> None:
        # The whole group, so that no worker process it started survives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def say(message: str, file: TextIO | None = None) -> None:
    print(f"run.py: {message}", file=file, flush=True)


def _unset(env: dict[str, str], name: str) -> bool:
    # The services treat an empty variable as unset; so do we.
    return not env.get(name, "").strip()


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip() or str(default)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise LaunchError(f"{name}: not a port number: {value!r}")
    return int(value)


def _url_host(bind_host: str) -> str:
    if bind_host in WILDCARD_OR_LOOPBACK:
        return "localhost"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def _healthy(url: str) -> bool:
    # No proxy handler: an http_proxy in the environment must not intercept localhost.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def local_encryption_key(data_dir: Path) -> tuple[str, bool]:
    """The SETTINGS_ENCRYPTION_KEY kept under `data_dir` (made on first use, readable by its
    owner only), and whether it was made now. Kept, so that stored secrets open after a restart."""
    path = data_dir / ENCRYPTION_KEY_FILE
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(os.urandom(32)).decode()
    # Created exclusive and private: never world-readable, not even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key, True


class Launcher:
    def __init__(self, data_dir: Path, demo: bool) -> None:
        self.data_dir = data_dir
        self.demo = demo
        self.env = dict(os.environ)
        self.cleanup = contextlib.ExitStack()
        self.watched: list[Watched] = []
        self.hurry = False
        self.upstream_root = ""  # the fake upstream's, in a demo

    def run(self) -> int:
        # Loopback unless asked: locally the admin API usually runs without ADMIN_PASS.
        defaults = {"LOG_FORMAT": "text", "KEYMGMT_HOST": "127.0.0.1", "PROXY_HOST": "127.0.0.1"}
        self.env.update({k: v for k, v in defaults.items() if _unset(self.env, k)})
        keymgmt_url = self._service_url("KEYMGMT", 8001)
        proxy_url = self._service_url("PROXY", 8002)
        self._start_postgres()
        self._start_redis()
        self._configure_upstream()
        self._configure_encryption_key()
        self._migrate()
        group = self._stop_group_later()
        keymgmt = self._spawn(group, "keymgmt", ["-m", "keymgmt"])
        proxy = self._spawn(group, "proxy", ["-m", "proxy"])
        self.watched += [keymgmt, proxy]
        self._wait_healthy(keymgmt, f"{keymgmt_url}/api/health")
        self._wait_healthy(proxy, f"{proxy_url}/api/health")
        if self.demo:
            self._set_up_demo(keymgmt_url, proxy_url)
        print(f"gateway ready: keymgmt {keymgmt_url} proxy {proxy_url}", flush=True)
        admin_pass = not _unset(self.env, "ADMIN_PASS")
        print(examples(keymgmt_url, proxy_url, self.env, admin_pass, self.demo), flush=True)
        return self._watch()

    def close(self) -> None:
        # A second Ctrl-C now means "faster", not "abandon the cleanup half-way".
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._hurry)
        self.cleanup.close()

    def _hurry(self, _signum: int, _frame: object) -> None:
        # Only a flag: printing here could re-enter a print that the signal interrupted.
        self.hurry = True

    def _service_url(self, prefix: str, default_port: int) -> str:
        port = _port(self.env, f"{prefix}_PORT", default_port)
        host = self.env[f"{prefix}_HOST"]
        probe_host = "127.0.0.1" if host in WILDCARD_OR_LOOPBACK else host
        if services.reachable(probe_host, port):
            raise LaunchError(
                f"port {port} ({prefix}_PORT) is already in use: is the gateway running "
                f"already? Stop it or set {prefix}_PORT"
            )
        return f"http://{_url_host(host)}:{port}"

    def _start_server(
        self, server: LocalPostgres | LocalRedis, port_var: str, hosts_var: str
    ) -> None:
        if services.reachable(server.host, server.port):
            raise LaunchError(
                f"port {server.port} for the local {server.name} is taken by another program: "
                f"stop it, set {port_var} to a free port, or set {hosts_var} to use a server"
            )
        self.cleanup.callback(server.stop)
        try:
            server.start()
        except RuntimeError as error:
            raise LaunchError(str(error)) from None
        say(f"{server.name} on {server.host}:{server.port}, data in {server.data_dir}")
        self.watched.append(server)

    def _start_postgres(self) -> None:
        if not _unset(self.env, "POSTGRESQL_HOSTS"):
            say(f"using the configured Postgres at {self.env['POSTGRESQL_HOSTS']}")
            return
        port = _port(self.env, "LOCAL_POSTGRES_PORT", 55432)
        data_dir = services.postgres_data_dir(self.data_dir / "postgres")
        server = LocalPostgres(data_dir, port=port, durable=True)
        self._start_server(server, "LOCAL_POSTGRES_PORT", "POSTGRESQL_HOSTS")
        self.env.update(
            POSTGRESQL_HOSTS=server.host,
            POSTGRESQL_PORT=str(server.port),
            POSTGRESQL_USERNAME=server.user,
            POSTGRESQL_SSL_ENABLED="false",
        )
        self.env.pop("POSTGRESQL_PASSWORD", None)  # trust authentication

    def _start_redis(self) -> None:
        if not _unset(self.env, "REDIS_HOSTS"):
            say(f"using the configured Redis at {self.env['REDIS_HOSTS']}")
            return
        port = _port(self.env, "LOCAL_REDIS_PORT", 56379)
        server = LocalRedis(self.data_dir / "redis", port=port, persistent=True)
        self._start_server(server, "LOCAL_REDIS_PORT", "REDIS_HOSTS")
        self.env.update(REDIS_HOSTS=server.host, REDIS_PORT=str(server.port))
        self.env.pop("REDIS_PASSWORD", None)  # it has none; AUTH would fail

    def _configure_upstream(self) -> None:
        if self.demo:
            port = 9000 if not services.reachable(services.HOST, 9000) else services.free_port()
            args = ["-m", "proxy.fakeupstream", "--host", services.HOST, "--port", str(port)]
            fake = self._spawn(self._stop_group_later(), "fake upstream", args)
            self._wait_listening(fake, services.HOST, port)
            self.watched.append(fake)
            self.upstream_root = f"http://{services.HOST}:{port}"
            self.env["OPENAI_BASE_URL"] = f"{self.upstream_root}/v1"
            if _unset(self.env, "OPENAI_API_KEY"):
                self.env["OPENAI_API_KEY"] = DEMO_API_KEY
            say(f"demo: the proxy forwards to the fake upstream at {self.env['OPENAI_BASE_URL']}")
        elif _unset(self.env, "OPENAI_API_KEY"):
            self.env["OPENAI_API_KEY"] = PLACEHOLDER_API_KEY
            say(
                "OPENAI_API_KEY is not set: the gateway starts, but every call to the upstream "
                "will fail until you set it and restart (or use `make demo`)"
            )

    def _configure_encryption_key(self) -> None:
        if not _unset(self.env, "SETTINGS_ENCRYPTION_KEY"):
            return
        key, made = local_encryption_key(self.data_dir)
        self.env["SETTINGS_ENCRYPTION_KEY"] = key
        path = self.data_dir / ENCRYPTION_KEY_FILE
        say(f"SETTINGS_ENCRYPTION_KEY {'made' if made else 'read'} in {path} (provider secrets)")

    def _set_up_demo(self, keymgmt_url: str, proxy_url: str) -> None:
        try:
            admin_pass = "" if _unset(self.env, "ADMIN_PASS") else self.env["ADMIN_PASS"]
            demo.provision(keymgmt_url, self.upstream_root, admin_pass)
            demo.wait_accepted(proxy_url)
        except demo.DemoSetupError as error:
            raise LaunchError(f"demo set-up: {error}") from None
        except OSError as error:  # urllib's errors included
            raise LaunchError(f"demo set-up: keymgmt or the proxy unreachable: {error}") from None

    def _migrate(self) -> None:
        migrate = self._spawn(self._stop_group_later(), "migrate", ["-m", "keymgmt", "migrate"])
        if migrate.proc.wait() != 0:
            raise LaunchError(f"database migration failed: {migrate.describe_exit()}")

    def _stop_group_later(self) -> list[Child]:
        """A list whose children are stopped together, in the cleanup's reverse order."""
        group: list[Child] = []
        self.cleanup.callback(self._stop, group)
        return group

    def _spawn(self, group: list[Child], name: str, args: list[str]) -> Child:
        child = Child(name, args, self.env)
        group.append(child)
        return child

    def _stop(self, group: list[Child]) -> None:
        for child in group:
            if child.running:
                child.proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in group:
            while child.running and not self.hurry and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            if child.running:
                reason = "as asked" if self.hurry else f"after {STOP_TIMEOUT:.0f} s"
                say(f"{child.name} still running {reason}: killing it")
            child.kill()
            child.proc.wait()

    def _wait_until(self, child: Child, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not child.running:
                raise LaunchError(f"{child.describe_exit()} during startup")
            if time.monotonic() > deadline:
                raise LaunchError(f"{child.name}: {what} after {START_TIMEOUT:.0f} s")
            time.sleep(POLL_INTERVAL)

    def _wait_listening(self, child: Child, host: str, port: int) -> None:
        self._wait_until(child, lambda: services.reachable(host, port), f"not listening on {port}")

    def _wait_healthy(self, child: Child, url: str) -> None:
        self._wait_until(child, lambda: _healthy(url), f"{url} not healthy")

    def _watch(self) -> int:
        while True:
            for process in self.watched:
                if not process.running:
                    say(f"{process.describe_exit()}: stopping everything")
                    return 1
            time.sleep(POLL_INTERVAL)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the gateway locally in the foreground.")
    parser.add_argument("--demo", action="store_true", help="use the built-in fake upstream")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".local",
        help="where local Postgres and Redis keep their data (default: .local)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    launcher = Launcher(args.data_dir.absolute(), demo=args.demo)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    code = 1
    try:
        code = launcher.run()
    except Interrupted:
        say("stopping (signal again to kill the services without waiting)")
        code = 0
    except LaunchError as error:
        say(f"error: {error}", file=sys.stderr)
    finally:
        try:
            launcher.close()
        except (RuntimeError, OSError) as error:
            say(f"error while stopping: {error}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
