"""Both services refuse a bad configuration with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import Settings


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("keymgmt", "POSTGRESQL_READ_TIME_OUT", "two seconds"),
        ("keymgmt", "KEYMGMT_PORT", "eighty"),
        ("proxy", "IN_MEMORY_DB_UPDATE_INTERVAL", "10 s"),
        ("proxy", "OPENAI_API_KEY", ""),
        ("proxy", "PRICING_FILE", "/nonexistent/prices.json"),
        ("keymgmt", "SETTINGS_ENCRYPTION_KEY", "not base64!"),
        ("proxy", "SETTINGS_ENCRYPTION_KEY", "c2hvcnQ="),
    ],
)
def test_bad_configuration_exits_with_one_line(module: str, variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRESQL_", "REDIS_"))}
    env["OPENAI_API_KEY"] = "sk-test"
    env[variable] = value
    result = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_names_its_database_and_fails_in_one_line(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRESQL_", "REDIS_"))}
    postgres = settings.postgres
    env.update(
        POSTGRESQL_HOSTS=postgres.hosts[0],
        POSTGRESQL_PORT=str(postgres.port),
        POSTGRESQL_USERNAME="no_such_role",
        POSTGRESQL_DB_NAME=postgres.db_name,
    )
    result = subprocess.run(
        [sys.executable, "-m", "keymgmt", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    target = f"database {postgres.db_name!r} on {postgres.hosts[0]}:{postgres.port}"
    announced, failed = result.stderr.strip().splitlines()
    assert target in announced and "'no_such_role'" in announced
    assert target in failed and "no_such_role" in failed
