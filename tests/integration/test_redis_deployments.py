"""Both services' Redis connections against deployments started here: TLS with a certificate
that must verify, an ACL user, a master found through a sentinel and followed across a failover."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from shared.config import RedisSettings
from shared.limit_keys import EVENTS_STREAM
from shared.limits import LimitEngine, NotReplicated, Settlement
from shared.models import Key
from shared.redisconn import create_redis
from shared.redispipe import RedisPipe, RedisReplyError, RedisUnavailable
from tests.redisdeploy import Access, RedisNode, SentinelDeployment, make_tls

BASE = RedisSettings(hosts=("127.0.0.1",), read_timeout=2.0)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    """A Redis answering only TLS, to the ACL user only."""
    directory = tmp_path_factory.mktemp("secured")
    access = Access(tls=make_tls(directory / "tls"), acl=True)
    with RedisNode(directory / "redis", access) as node:
        yield node


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelDeployment]:
    access = Access(tls=make_tls(tmp_path / "tls"), acl=True)
    with SentinelDeployment(tmp_path, access) as deployment:
        yield deployment


def on(node: RedisNode) -> RedisSettings:
    return replace(node.access.settings(BASE), port=node.port)


async def test_tls_and_an_acl_user_for_the_pipe_and_the_client(secured: RedisNode) -> None:
    settings = on(secured)
    pipe = RedisPipe(settings)
    client = create_redis(settings)
    try:
        assert await pipe.execute([("ACL", "WHOAMI")]) == [b"gateway"]
        assert await client.acl_whoami() == "gateway"
    finally:
        await pipe.close()
        await client.aclose()


@pytest.mark.parametrize(
    "change, why, client_why",
    [
        # Not signed by a CA the system trusts.
        ({"tls_ca_file": ""}, "CERTIFICATE_VERIFY_FAILED", "CERTIFICATE_VERIFY_FAILED"),
        ({"tls_enabled": False}, "cannot connect", "."),
        ({"password": "wrong"}, "WRONGPASS", "invalid username-password"),
        ({"username": ""}, "WRONGPASS", "invalid username-password"),  # the default user is off
    ],
)
async def test_an_unverified_certificate_or_a_wrong_user_connects_to_nothing(
    secured: RedisNode, change: dict[str, object], why: str, client_why: str
) -> None:
    settings = replace(on(secured), read_timeout=0.5, **change)  # type: ignore[arg-type]
    pipe = RedisPipe(settings)
    try:
        with pytest.raises(RedisUnavailable, match=why):
            await pipe.execute([("PING",)])
    finally:
        await pipe.close()
    client = create_redis(settings)
    try:
        with pytest.raises(redis.RedisError, match=client_why):
            await client.ping()
    finally:
        await client.aclose()


async def test_another_ca_is_refused(secured: RedisNode, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other", "another CA")
    pipe = RedisPipe(replace(on(secured), tls_ca_file=str(other.ca)))
    try:
        with pytest.raises(RedisUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await pipe.execute([("PING",)])
    finally:
        await pipe.close()


def key(key_id: str) -> Key:
    return Key(key_id, "test", os.urandom(8).hex(), 0, 0, cost_limit_in_usd=100.0)


async def test_sentinel_mode_follows_a_failover_and_settles_each_batch_once(
    sentinel_set: SentinelDeployment,
) -> None:
    settings = sentinel_set.settings(BASE)
    pipe, client = RedisPipe(settings), create_redis(settings)
    engine = LimitEngine(pipe, 60, wait_replicas=1, wait_ms=1000)
    try:
        assert (await pipe.execute([("ROLE",)]))[0][0] == b"master"
        await client.set("gw:spend-epoch", "test")
        await client.xgroup_create(EVENTS_STREAM, "keymgmt", id="0", mkstream=True)
        one = key("failover-key")
        await engine.settle([Settlement(one, 5, event=b"{}")], "replica-a", 1)
        old, new = sentinel_set.kill_master()
        with pytest.raises(RedisUnavailable):  # the sentinel still names the dead master
            await engine.settle([Settlement(one, 7)], "replica-a", 2)
        sentinel_set.wait_for_failover(new)
        # Applied, but no replica is left to acknowledge it: it counts once the old master is
        # back as the new one's replica, and sending it again does not apply it twice.
        with pytest.raises(NotReplicated):
            await engine.settle([Settlement(one, 7)], "replica-a", 2)
        sentinel_set.rejoin(old, new)
        await engine.settle([Settlement(one, 7)], "replica-a", 2)
        assert (await pipe.execute([("CONFIG", "GET", "tls-port")]))[0][1] == str(new.port).encode()
        assert (await engine.usage(one)).cost_usd * 1e9 == pytest.approx(12)
        # keymgmt's client follows too.
        assert await client.get("gw:{failover-key}:spend") == b"12"
        assert await client.xlen(EVENTS_STREAM) == 1
    finally:
        await pipe.close()
        await client.aclose()


async def test_a_batch_no_replica_acknowledged_is_not_counted_as_applied(
    sentinel_set: SentinelDeployment,
) -> None:
    pipe = RedisPipe(sentinel_set.settings(BASE))
    engine = LimitEngine(pipe, 60, wait_replicas=1, wait_ms=200)
    try:
        sentinel_set.replica.stop()
        with pytest.raises(NotReplicated):
            await engine.settle([Settlement(key("unreplicated"), 3)], "replica-b", 1)
    finally:
        await pipe.close()


async def test_a_demoted_master_sends_the_pipe_to_the_new_one_and_a_batch_counts_once(
    sentinel_set: SentinelDeployment,
) -> None:
    pipe = RedisPipe(sentinel_set.settings(BASE))
    engine = LimitEngine(pipe, 60, wait_replicas=1, wait_ms=300)
    one = key("demoted")
    try:
        await pipe.execute([("SET", "gw:spend-epoch", "test")])
        old = sentinel_set.current_master()
        new = sentinel_set.replica if old is sentinel_set.master else sentinel_set.master
        with sentinel_set.sentinel.client_without_acl() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        sentinel_set.wait_for_failover(new)
        # The old master, until it is demoted, takes the batch but no replica acknowledges it;
        # once demoted it answers READONLY, and the pipe goes to the new master.
        failures = []
        while True:
            try:
                await engine.settle([Settlement(one, 9)], "replica-c", 1)
                break
            except (RedisReplyError, RedisUnavailable, NotReplicated) as error:
                failures.append(type(error).__name__)
                assert len(failures) < 100, failures
        with new.client() as client:
            assert client.role()[0] == b"master"
            assert client.get("gw:{demoted}:spend") == b"9"
    finally:
        await pipe.close()


async def test_a_readonly_reply_closes_the_connection_in_any_mode(tmp_path: Path) -> None:
    """A managed service's endpoint that moved to the new master: the pipe must reconnect."""
    with RedisNode(tmp_path / "master", Access()) as master:
        replica = RedisNode(tmp_path / "replica", Access())
        replica.extra = ["--replicaof", master.host, str(master.port)]
        with replica:
            pipe = RedisPipe(replace(BASE, port=replica.port))
            try:
                [first] = await pipe.execute([("CLIENT", "ID")])
                with pytest.raises(RedisReplyError, match="READONLY"):
                    await pipe.execute([("SET", "gw:readonly", "x")])
                [second] = await pipe.execute([("CLIENT", "ID")])
                assert second != first  # a new connection
            finally:
                await pipe.close()
