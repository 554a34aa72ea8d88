"""Throughput with wrk, when it is installed: a C load generator costs far less CPU per request
than a Python one, which matters when client and server share two cores."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.loadgen import Target

WRK = shutil.which("wrk")
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def script(body: str, headers: dict[str, str]) -> str:
    # wrk sends GETs without a body unless a script says otherwise.
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def throughput(target: Target, concurrency: int, duration: float) -> dict[str, Any]:
    assert WRK is not None
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        lua = Path(directory) / "post.lua"
        lua.write_text(script(target.body.decode(), target.headers))
        result = subprocess.run(
            [
                *(WRK, "-t1", f"-c{concurrency}", f"-d{duration:.0f}s", "--timeout", "10s"),
                *("--latency", "-s", str(lua), target.url),
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        )
    return parse(result.stdout)


def parse(output: str) -> dict[str, Any]:
    requests = int(_match(r"(\d+) requests in", output))
    errors = int(_match(r"Non-2xx or 3xx responses: (\d+)", output, "0"))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return {
        "rps": float(_match(r"Requests/sec:\s+([\d.]+)", output)),
        "requests": requests,
        "errors": errors,
        "p50": _latency_ms(output, "50%"),
        "p99": _latency_ms(output, "99%"),
        "tool": "wrk",
    }


def _latency_ms(output: str, label: str) -> float | None:
    found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    return float(found.group(1)) * UNITS_MS[found.group(2)] if found else None


def _match(pattern: str, output: str, default: str | None = None) -> str:
    found = re.search(pattern, output)
    if found:
        return found.group(1)
    if default is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return default
