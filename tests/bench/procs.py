"""Server processes of the benchmark: each in its own session, so that stopping one stops its
workers too, and every one of them stopped when the run ends however it ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0


class Unavailable(Exception):
    """A leg cannot run on this machine; the message says why, and the run goes on."""


@dataclass
class Server:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def cpu_list(text: str) -> frozenset[int]:
    """CPUs as taskset and /proc write them: `1`, `1-2`, `0,2-3`."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def cpu_text(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


@dataclass
class Processes:
    """Starts servers and owns them: `stop_all` (also run on exit) ends every one still up."""

    log_dir: Path
    server_cpus: frozenset[int] = frozenset()  # where servers under test run; empty: anywhere
    running: list[Server] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        under_test: bool = False,
    ) -> Server:
        if under_test and self.server_cpus:
            # taskset execs the server: the pid stays the server's, and its workers inherit.
            argv = ["taskset", "-c", cpu_text(self.server_cpus), *argv]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers stop with it
            )
        server = Server(name, port, log, proc)
        self.running.append(server)
        return server

    def stop(self, server: Server) -> None:
        if server in self.running:
            self.running.remove(server)
        _stop_group(server.proc)

    def stop_all(self) -> None:
        for server in reversed(list(self.running)):
            self.stop(server)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    # The group id is the pid of the child we started (start_new_session), never anyone else's.
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    # Workers of the group may outlive their parent a moment; what is left then is killed.
    deadline = time.monotonic() + STOP_TIMEOUT
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_http(server: Server, path: str, timeout: float) -> float:
    """Seconds from now until GET path answers 200; raises if the server exits or times out."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        if http_status(server.url(path)) == 200:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"{server.name}: {path} not 200 within {timeout:.0f}s:\n{server.log_tail()}")


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(p) for p in task.read_text().split()]
            except OSError:
                continue
            found += kids
            pending += kids
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of pid and its living descendants."""
    ticks = 0
    for member in (pid, *children(pid)):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of pid and all its descendants, in MB (VmRSS of /proc/PID/status)."""
    total_kb = 0
    for member in (pid, *children(pid)):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024
