"""The gateway under test: its Postgres and Redis, its database and keys, and its processes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis

from shared.config import PostgresSettings
from shared.limit_keys import SPEND_MARKER
from tests.bench.procs import HOST, PYTHON, ROOT, Processes, Server, free_port, wait_http

sys.path.insert(0, str(ROOT / "deploy" / "local"))
import services  # deploy/local is not a package

DATABASE = "gateway_bench"
# The tests use 13 unless TEST_REDIS_DB says; 0 belongs to whoever else runs here. Another run
# emptying this db takes the spend marker with it, and the proxy out of Redis.
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "14"))
UPSTREAM_KEY = "sk-bench-upstream"
# Seals the bench's provider setting; keymgmt and the proxy must share it.
SETTINGS_ENCRYPTION_KEY = base64.b64encode(hashlib.sha256(b"gateway bench").digest()).decode()
KEYS_PATH = "/api/key-management/keys"
SETTINGS_PATH = "/api/provider-settings"
USERS_PATH = "/api/users"
ROUTES_PATH = "/api/routes"
ROUTE_PATH = "/bench/chat/completions"  # the route leg's: one healthy openai step
BENCH_MODEL = "gpt-4o-mini"  # what every leg asks for
COPY_CHUNK = 50_000
# Older than the snapshot's re-read overlap (30 s), so an incremental refresh does not re-read
# the bulk-loaded rows.
FILLER_AGE = timedelta(days=1)


@dataclass(frozen=True)
class Stores:
    pg_host: str
    pg_port: int
    pg_user: str
    pg_password: str
    redis_host: str
    redis_port: int
    redis_password: str

    def redis_client(self, db: int) -> redis.Redis:
        return redis.Redis(
            host=self.redis_host, port=self.redis_port, password=self.redis_password or None, db=db
        )

    def postgres_settings(self) -> PostgresSettings:
        return PostgresSettings(
            hosts=(self.pg_host,),
            port=self.pg_port,
            username=self.pg_user,
            password=self.pg_password,
            db_name=DATABASE,
            read_timeout=60.0,  # the scale runs read a million rows in one statement
        )

    async def connect(self, database: str = DATABASE) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.pg_host,
            port=self.pg_port,
            user=self.pg_user,
            password=self.pg_password or None,
            database=database,
        )


@contextlib.contextmanager
def stores(data_dir: Path) -> Iterator[Stores]:
    """The configured (or this machine's) Postgres and Redis, else throw-away ones."""
    pg_host = os.environ.get("POSTGRESQL_HOSTS", HOST).split(",")[0].strip() or HOST
    pg_port = int(os.environ.get("POSTGRESQL_PORT", "5432"))
    redis_host = os.environ.get("REDIS_HOSTS", HOST).split(",")[0].strip() or HOST
    redis_port = int(os.environ.get("REDIS_PORT", "6379"))
    pg_user = os.environ.get("POSTGRESQL_USERNAME", "postgres")
    pg_password = os.environ.get("POSTGRESQL_PASSWORD", "")
    redis_password = os.environ.get("REDIS_PASSWORD", "")
    with contextlib.ExitStack() as stack:
        if not services.reachable(pg_host, pg_port):
            print("no Postgres answers: starting a throw-away one", file=sys.stderr)
            data_dir.mkdir(parents=True, exist_ok=True)
            data_dir.chmod(0o755)  # Postgres runs as its own user and must traverse it
            pg = stack.enter_context(services.Postgres(data_dir / "postgres", durable=False))
            pg_host, pg_port, pg_user, pg_password = pg.host, pg.port, pg.user, ""
        if not services.reachable(redis_host, redis_port):
            print("no Redis answers: starting a throw-away one", file=sys.stderr)
            server = stack.enter_context(services.Redis(data_dir / "redis"))
            redis_host, redis_port, redis_password = server.host, server.port, ""
        yield Stores(pg_host, pg_port, pg_user, pg_password, redis_host, redis_port, redis_password)


def service_env(stores: Stores, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "POSTGRESQL_HOSTS": stores.pg_host,
        "POSTGRESQL_PORT": str(stores.pg_port),
        "POSTGRESQL_USERNAME": stores.pg_user,
        "POSTGRESQL_PASSWORD": stores.pg_password,
        "POSTGRESQL_DB_NAME": DATABASE,
        "REDIS_HOSTS": stores.redis_host,
        "REDIS_PORT": str(stores.redis_port),
        "REDIS_PASSWORD": stores.redis_password,
        "REDIS_DB": str(REDIS_DB),
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "SETTINGS_ENCRYPTION_KEY": SETTINGS_ENCRYPTION_KEY,
        "IN_MEMORY_DB_UPDATE_INTERVAL": "1s",
        "LOG_LEVEL": "info",  # the default: the proxy writes its line per call
        "ADMIN_PASS": "",
    }
    env.update(overrides)
    return env


async def drop_database(
    stores: Stores, database: str = DATABASE, create_again: bool = False
) -> None:
    connection = await stores.connect("postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if create_again:
            await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


def migrate(stores: Stores) -> None:
    subprocess.run(
        [PYTHON, "-m", "keymgmt", "migrate"],
        cwd=ROOT,
        env=service_env(stores),
        capture_output=True,
        timeout=120,
        check=True,
    )


FILLER_COLUMNS = [
    "key_id",
    "key_hash",
    "name",
    "tags",
    "cost_limit_in_usd",
    "rate_limit_over_time",
    "rate_limit_unit",
    "created_at",
    "updated_at",
]


def filler_rows(start: int, count: int, stamp: datetime) -> list[tuple[object, ...]]:
    """Keys as keymgmt would store them: a rate and a cost limit each, unique live hashes."""
    return [
        (
            uuid.UUID(int=i + 1),
            hashlib.sha256(f"sk-bench-filler-{i}".encode()).hexdigest(),
            f"filler {i}",
            ["bench"],
            100.0,
            600,
            "m",
            stamp,
            stamp,
        )
        for i in range(start, start + count)
    ]


async def insert_keys(stores: Stores, start: int, count: int) -> None:
    """COPY `count` filler keys numbered from `start`, then ANALYZE as autovacuum would."""
    stamp = datetime.now(UTC) - FILLER_AGE
    connection = await stores.connect()
    try:
        for offset in range(start, start + count, COPY_CHUNK):
            size = min(COPY_CHUNK, start + count - offset)
            await connection.copy_records_to_table(
                "keys", records=filler_rows(offset, size, stamp), columns=FILLER_COLUMNS
            )
        await connection.execute("ANALYZE keys")
    finally:
        await connection.close()


def flush_redis(stores: Stores, db: int = REDIS_DB) -> None:
    client = stores.redis_client(db)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass(frozen=True)
class BenchKeys:
    """The raw gateway keys the proxy legs present."""

    openai: str  # no provider setting: the proxy's OPENAI_API_KEY, as before settings existed
    anthropic: str  # one anthropic setting, pointing at the fake upstream
    users: str  # the openai key's limits, a second rate window and BENCH_USER's record


BENCH_KEYS = len(fields(BenchKeys))  # live keys besides the fillers
# Limits far out of reach, so that every request runs the whole admit-and-settle path.
BENCH_LIMITS = {"rateLimitOverTime": 1_000_000_000, "rateLimitUnit": "m", "costLimitInUsd": 1e6}
BENCH_USER = "bench-user"  # the userId the users leg's calls name


def two_window_key(raw: str) -> dict[str, Any]:
    """The users leg's key: BENCH_LIMITS and a per-second window, a unit of its own, since the
    strictest window of a unit is the only one held."""
    return {
        "name": "bench-users",
        "key": raw,
        **BENCH_LIMITS,
        "rateLimits": [{"overTime": 1_000_000_000, "unit": "s"}],
    }


def bench_user(key_id: str) -> dict[str, Any]:
    """BENCH_USER of the users leg's key, with a rate and a cost limit of its own."""
    return {"userId": BENCH_USER, "name": "bench", "keyIds": [key_id], **BENCH_LIMITS}


def create_bench_keys(processes: Processes, stores: Stores, upstream: Server) -> BenchKeys:
    """Creates, through keymgmt, the keys (and the setting) the proxy legs use, the one-step
    route (at ROUTE_PATH) the route leg calls with the openai key, and the users leg's user."""
    port = free_port()
    keymgmt = processes.start(
        "keymgmt",
        [PYTHON, "-m", "keymgmt"],
        port,
        service_env(stores, KEYMGMT_HOST=HOST, KEYMGMT_PORT=str(port)),
    )
    try:
        wait_http(keymgmt, "/api/health", timeout=60)
        openai = f"sk-bench-{uuid.uuid4().hex}"
        key = send_json(keymgmt.url(KEYS_PATH), {"name": "bench", "key": openai, **BENCH_LIMITS})
        route = {"name": "bench", "path": ROUTE_PATH, "keyIds": [key["keyId"]],
                 "steps": [{"provider": "openai", "model": BENCH_MODEL}]}  # fmt: skip
        send_json(keymgmt.url(ROUTES_PATH), route, method="POST")
        setting = send_json(
            keymgmt.url(SETTINGS_PATH),
            {
                "provider": "anthropic",
                "name": "bench-anthropic",
                "setting": {"apikey": UPSTREAM_KEY, "baseUrl": upstream.url("")},
            },
        )
        anthropic = f"sk-bench-{uuid.uuid4().hex}"
        send_json(
            keymgmt.url(KEYS_PATH),
            {
                "name": "bench-anthropic",
                "key": anthropic,
                "settingIds": [setting["id"]],
                **BENCH_LIMITS,
            },
        )
        users = f"sk-bench-{uuid.uuid4().hex}"
        users_key = send_json(keymgmt.url(KEYS_PATH), two_window_key(users))
        send_json(keymgmt.url(USERS_PATH), bench_user(users_key["keyId"]), method="POST")
        wait_for_spend_marker(stores, timeout=30)
        return BenchKeys(openai, anthropic, users)
    finally:
        processes.stop(keymgmt)


def wait_for_spend_marker(stores: Stores, timeout: float) -> None:
    """keymgmt marks an empty Redis once it has restored any lost spend into it; until then the
    proxy refuses keys with a cost limit. The mark stays when keymgmt stops."""
    client = stores.redis_client(REDIS_DB)
    deadline = time.monotonic() + timeout
    try:
        while not client.exists(SPEND_MARKER):
            if time.monotonic() > deadline:
                raise RuntimeError(f"keymgmt did not mark Redis ready within {timeout:.0f}s")
            time.sleep(0.05)
    finally:
        client.close()


def send_json(url: str, payload: dict[str, object], method: str = "PUT") -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=orjson.dumps(payload), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {url}: HTTP {error.code}: {error.read()[:300]!r}") from None


def start_proxy(
    processes: Processes,
    stores: Stores,
    upstream: Server,
    name: str,
    workers: int = 1,
    settings: dict[str, str] | None = None,
    module: str = "proxy",
    tree: Path = ROOT,
) -> Server:
    """A proxy from the source tree `tree` (another checkout, for a before-and-after run)."""
    port = free_port()
    env = service_env(
        stores,
        OPENAI_BASE_URL=upstream.url("/v1"),
        PROXY_HOST=HOST,
        PROXY_PORT=str(port),
        PROXY_WORKERS=str(workers),
        # `-m` puts the cwd ahead of the installed project; PYTHONPATH does for its workers.
        **({} if tree == ROOT else {"PYTHONPATH": str(tree)}),
        **(settings or {}),
    )
    return processes.start(name, [PYTHON, "-m", module], port, env, cwd=tree, under_test=True)
