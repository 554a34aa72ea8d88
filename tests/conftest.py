"""Shared fixtures: real Postgres and Redis (throw-away ones when none is reachable)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clusterpipe import open_pipe
from shared.config import PostgresSettings, RedisSettings, Settings
from shared.db_engine import create_engine, migrate
from shared.redisconn import create_redis
from shared.redispipe import Pipe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import services  # noqa: E402  (deploy/local is not a package)

from tests.redisdeploy import (  # noqa: E402  (needs services)
    Access,
    ClusterDeployment,
    SentinelDeployment,
    make_tls,
)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def _configured(host_var: str, port_var: str, default_port: int) -> Endpoint:
    host = os.environ.get(host_var, "127.0.0.1").split(",")[0].strip() or "127.0.0.1"
    return Endpoint(host, int(os.environ.get(port_var, default_port)))


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gateway-test-") as directory:
        path = Path(directory)
        path.chmod(0o755)  # a Postgres started as its own user must traverse it
        yield path


@pytest.fixture(scope="session")
def postgres_endpoint(scratch_dir: Path) -> Iterator[Endpoint]:
    endpoint = _configured("POSTGRESQL_HOSTS", "POSTGRESQL_PORT", 5432)
    if services.reachable(endpoint.host, endpoint.port):
        yield endpoint
        return
    with services.Postgres(scratch_dir / "postgres", durable=False) as server:
        yield Endpoint(server.host, server.port)


@pytest.fixture(scope="session")
def redis_endpoint(scratch_dir: Path) -> Iterator[Endpoint]:
    endpoint = _configured("REDIS_HOSTS", "REDIS_PORT", 6379)
    if services.reachable(endpoint.host, endpoint.port):
        yield endpoint
        return
    with services.Redis(scratch_dir / "redis") as server:
        yield Endpoint(server.host, server.port)


def _postgres_user() -> str:
    return os.environ.get("POSTGRESQL_USERNAME", "postgres")


async def _admin(endpoint: Endpoint, statement: str) -> None:
    connection = await asyncpg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=_postgres_user(),
        password=os.environ.get("POSTGRESQL_PASSWORD") or None,
        database="postgres",
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def database_name(postgres_endpoint: Endpoint) -> Iterator[str]:
    """A database of its own for this run, so tests never touch anyone's data."""
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_endpoint, f'CREATE DATABASE "{name}"'))
    yield name
    asyncio.run(_admin(postgres_endpoint, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_db() -> int:
    """A logical Redis database the tests may flush; never 0, which other programs use."""
    return int(os.environ.get("TEST_REDIS_DB", "13"))


# Provider secrets of the test run are sealed with this (SETTINGS_ENCRYPTION_KEY).
TEST_ENCRYPTION_KEY = os.urandom(32)


@pytest.fixture(scope="session")
def redis_settings(
    redis_endpoint: Endpoint, redis_db: int, scratch_dir: Path
) -> Iterator[RedisSettings]:
    """The Redis of the `settings` fixture. TEST_REDIS_DEPLOYMENT=sentinel runs the tests that
    use it against a master, a replica and a sentinel started here, over TLS as an ACL user;
    TEST_REDIS_DEPLOYMENT=cluster against a cluster of three masters with a replica each."""
    plain = RedisSettings(
        hosts=(redis_endpoint.host,), port=redis_endpoint.port, db=redis_db, read_timeout=0.4
    )
    deployment = os.environ.get("TEST_REDIS_DEPLOYMENT", "standalone")
    if deployment == "standalone":
        yield plain
    elif deployment == "sentinel":
        access = Access(tls=make_tls(scratch_dir / "sentinel-tls"), acl=True)
        with SentinelDeployment(scratch_dir / "sentinel", access) as sentinel_set:
            yield sentinel_set.settings(plain)
    elif deployment == "cluster":
        with ClusterDeployment(scratch_dir / "cluster") as cluster:
            cluster.mark_spend_held()
            yield cluster.settings(plain)
    else:
        raise pytest.UsageError(f"TEST_REDIS_DEPLOYMENT: no deployment {deployment!r}")


@pytest.fixture
def settings(
    postgres_endpoint: Endpoint, redis_settings: RedisSettings, database_name: str
) -> Settings:
    return Settings(
        postgres=PostgresSettings(
            hosts=(postgres_endpoint.host,),
            port=postgres_endpoint.port,
            username=_postgres_user(),
            password=os.environ.get("POSTGRESQL_PASSWORD", ""),
            db_name=database_name,
        ),
        redis=redis_settings,
        openai_api_key="sk-upstream-secret",
        snapshot_interval=0.2,
        log_format="text",
        settings_encryption_key=TEST_ENCRYPTION_KEY,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """keymgmt's SQLAlchemy engine on the run's database, migrated."""
    engine = create_engine(settings.postgres)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[redis.Redis | RedisCluster]:
    """redis-py's client of the run's Redis; on a cluster, of every master (a SCAN reaches each)."""
    client: redis.Redis | RedisCluster
    if settings.redis.mode == "cluster":
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.redis.addresses()],
            username=settings.redis.username or None,
            password=settings.redis.password or None,
        )
    else:
        client = create_redis(settings.redis)
    yield client
    await client.aclose()


@pytest.fixture
async def pipe(settings: Settings) -> AsyncIterator[Pipe]:
    pipe = open_pipe(settings.redis)
    yield pipe
    await pipe.close()


def with_admin_pass(settings: Settings, admin_pass: str) -> Settings:
    return replace(settings, admin_pass=admin_pass)


@pytest.fixture
def private_postgres(scratch_dir: Path) -> Iterator[services.Postgres]:
    """A Postgres of this test's own, which the test may stop and start."""
    with services.Postgres(scratch_dir / f"pg-{uuid.uuid4().hex[:8]}", durable=False) as server:
        yield server


def on_postgres(settings: Settings, server: services.Postgres) -> Settings:
    postgres = replace(
        settings.postgres,
        hosts=(server.host,),
        port=server.port,
        username=server.user,
        password="",
        db_name="postgres",
        read_timeout=1.0,
        write_timeout=1.0,
    )
    return replace(settings, postgres=postgres)
