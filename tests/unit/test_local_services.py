"""Local Postgres/Redis launcher: start, persist across restart, stop, kill."""

import asyncio
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import services


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: under root it is 0700, and postgres runs as the postgres user.
    path = Path(tempfile.mkdtemp(prefix="local-services-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _query(pg: services.Postgres, *statements: str) -> object:
    conn = await asyncpg.connect(host=pg.host, port=pg.port, user=pg.user, database="postgres")
    try:
        for statement in statements[:-1]:
            await conn.execute(statement)
        return await conn.fetchval(statements[-1])
    finally:
        await conn.close()


def test_postgres_restart_keeps_data(data_dir: Path) -> None:
    pg = services.Postgres(data_dir / "pg", port=services.free_port(), durable=False)
    with pg:
        create = ("CREATE TABLE t (x int)", "INSERT INTO t VALUES (42)", "SELECT 1")
        assert asyncio.run(_query(pg, *create)) == 1
    assert not services.reachable(pg.host, pg.port)
    assert (data_dir / "pg" / "postgres.log").is_file()

    with pg:
        assert asyncio.run(_query(pg, "SELECT x FROM t")) == 42
    pg.stop()  # idempotent
    assert not services.reachable(pg.host, pg.port)


def test_redis_persistent_restart_then_kill(data_dir: Path) -> None:
    server = services.Redis(data_dir / "redis", persistent=True)
    server.start()
    redis.Redis(host=server.host, port=server.port).set("k", "v")
    server.stop()
    assert not services.reachable(server.host, server.port)

    server.start()
    assert redis.Redis(host=server.host, port=server.port).get("k") == b"v"
    server.kill()
    assert not services.reachable(server.host, server.port)
    assert (data_dir / "redis" / "redis.log").is_file()


def test_start_refuses_a_busy_port(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert services.reachable("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="already in use"):
            services.Redis(data_dir, port=port).start()


def test_free_port_is_not_reachable() -> None:
    assert not services.reachable("127.0.0.1", services.free_port())


@pytest.mark.skipif(not services._db_owner(), reason="only root runs Postgres as another user")
def test_postgres_data_moves_out_of_a_private_checkout(data_dir: Path) -> None:
    checkout = data_dir / "root-home"
    checkout.mkdir(mode=0o700)
    preferred = checkout / ".local" / "postgres"
    fallback_root = data_dir / "fallback"

    chosen = services.postgres_data_dir(preferred, fallback_root)

    assert chosen.parent == fallback_root
    assert services.postgres_data_dir(preferred, fallback_root) == chosen  # stable per checkout
    with services.Postgres(chosen, port=services.free_port(), durable=False) as pg:
        assert asyncio.run(_query(pg, "SELECT 1")) == 1


def test_postgres_data_stays_where_it_is_reachable(data_dir: Path) -> None:
    preferred = data_dir / ".local" / "postgres"
    assert services.postgres_data_dir(preferred, data_dir / "fallback") == preferred
