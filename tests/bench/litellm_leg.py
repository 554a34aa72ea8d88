"""LiteLLM's proxy as the reference leg: installed on demand into a venv of its own, no database,
one model pointing at the fake upstream."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

from tests.bench.gateway import UPSTREAM_KEY
from tests.bench.procs import HOST, Processes, Server, Unavailable, wait_http

# Not "sk-1234": LiteLLM refuses that one at boot.
MASTER_KEY = "sk-bench-litellm-master"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 120.0
HEALTH_PATH = "/health/liveliness"


def ensure_installed(venv_dir: Path) -> Path:
    """The `litellm` command of venv_dir, installing `litellm[proxy]` there when absent."""
    command = venv_dir / "bin" / "litellm"
    if command.exists():
        return command
    print(f"installing litellm[proxy] into {venv_dir} (once) ...", file=sys.stderr, flush=True)
    try:
        venv.create(venv_dir, with_pip=True, clear=True)
        subprocess.run(
            [str(venv_dir / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as error:
        tail = "\n".join(error.stderr.splitlines()[-3:])
        raise Unavailable(f"pip install litellm[proxy] failed:\n{tail}") from None
    except (subprocess.TimeoutExpired, OSError) as error:
        raise Unavailable(f"pip install litellm[proxy] failed: {error}") from None
    if not command.exists():
        raise Unavailable(f"litellm[proxy] installed no {command}")
    return command


def write_config(path: Path, upstream: Server, model: str) -> None:
    # JSON is YAML: no YAML library needed on this side.
    path.write_text(
        f"""{{
  "model_list": [{{
    "model_name": "{model}",
    "litellm_params": {{
      "model": "openai/{model}",
      "api_base": "{upstream.url("/v1")}",
      "api_key": "{UPSTREAM_KEY}"
    }}
  }}],
  "general_settings": {{"master_key": "{MASTER_KEY}"}},
  "litellm_settings": {{"telemetry": false, "set_verbose": false}}
}}
"""
    )


def start(processes: Processes, upstream: Server, work_dir: Path, model: str, port: int) -> Server:
    command = ensure_installed(work_dir / "litellm-venv")
    config = work_dir / "litellm-config.yaml"
    write_config(config, upstream, model)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    # Its price map from the package, not from the network.
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    server = processes.start(
        "litellm",
        [str(command), "--config", str(config), "--host", HOST, "--port", str(port)],
        port,
        env,
        under_test=True,
    )
    try:
        wait_http(server, HEALTH_PATH, START_TIMEOUT)
    except RuntimeError as error:
        processes.stop(server)
        raise Unavailable(f"LiteLLM did not start: {error}") from None
    return server
