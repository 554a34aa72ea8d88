"""The pipe to a Redis Cluster against a real one: routing by slot, scripts, redirects while a
slot migrates, seeds that are down, TLS and an ACL user, and a master's failover."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import services

from shared.clusterpipe import ClusterPipe, open_pipe
from shared.config import RedisSettings
from shared.redispipe import RedisPipe, RedisReplyError, RedisUnavailable
from shared.slots import first_key, slot_of
from tests.redisdeploy import Access, ClusterDeployment, RedisNode, make_tls

BASE = RedisSettings(hosts=("127.0.0.1",), read_timeout=2.0)
SCRIPT = "redis.call('INCRBY', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """One cluster for the tests that leave it serving every slot."""
    with ClusterDeployment(tmp_path_factory.mktemp("cluster")) as deployment:
        yield deployment


@pytest.fixture
async def pipe(cluster: ClusterDeployment) -> AsyncIterator[ClusterPipe]:
    pipe = ClusterPipe(cluster.settings(BASE))
    yield pipe
    await pipe.close()


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def owners(cluster: ClusterDeployment) -> list[tuple[int, int, RedisNode]]:
    """(first slot, last slot, master) of each range, as the first node sees them."""
    with cluster.live()[0].client() as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    by_port = {node.port: node for node in cluster.nodes}
    return sorted((start, end, by_port[int(master[1])]) for start, end, master, *_ in ranges)


def masters(cluster: ClusterDeployment) -> list[RedisNode]:
    found = {node.port for _, _, node in owners(cluster)}
    nodes = [node for node in cluster.nodes if node.port in found]
    assert len(nodes) == ClusterDeployment.MASTERS
    return nodes


def key_on(cluster: ClusterDeployment, master: RedisNode, name: str) -> str:
    """A key of this test run whose slot `master` serves."""
    ranges = [(start, end) for start, end, node in owners(cluster) if node is master]
    for n in range(10_000):
        key = unique(f"{name}{n}")
        if any(start <= slot_of(key) <= end for start, end in ranges):
            return key
    raise AssertionError(f"no key found on {master.port}")


def role(node: RedisNode) -> bytes:
    with node.client() as client:
        return bytes(client.role()[0])


def stat(node: RedisNode, section: str, name: str, field: str) -> int:
    with node.client() as client:
        return int(client.info(section).get(name, {}).get(field, 0))


def redirects(node: RedisNode, kind: str) -> int:
    return stat(node, "errorstats", f"errorstat_{kind}", "count")


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "k"),
        ("SET", "k", "v", "PX", 5),
        ("INCRBY", "k", 1),
        ("HGET", "k", "f"),
        ("HGETALL", "k"),
        ("HINCRBY", "k", "f", 1),
        ("ZADD", "k", 1, "m"),
        ("ZREM", "k", "m"),
        ("ZCARD", "k"),
        ("ZREMRANGEBYSCORE", "k", "-inf", 0),
        ("EXISTS", "k", "k2"),
        ("XADD", "k", "*", "f", "v"),
        ("DEL", "k", "k2"),
        ("PEXPIRE", "k", 9),
        ("TYPE", "k"),
        ("HSCAN", "k", 0),
        ("EVALSHA", "0" * 40, 2, "k", "k2", "a"),
        ("eval", "return 1", 1, "k"),
        (b"EVALSHA", "0" * 40, b"1", b"k"),
        ("EVAL", "return 1", 0, "a"),
        ("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "STREAMS", "k", "k2", ">", ">"),
        ("xreadgroup", "GROUP", "STREAMS", "STREAMS", "BLOCK", 1, "STREAMS", "k", "0"),
        ("XREAD", "COUNT", 1, "STREAMS", "k", "0"),
        ("XGROUP", "CREATE", "k", "g", "0", "MKSTREAM"),
        ("XACK", "k", "g", "1-0"),
        ("XAUTOCLAIM", "k", "g", "c", 0, "0-0", "COUNT", 5),
        ("XPENDING", "k", "g"),
        ("WAIT", 1, 0),
        ("PING", "x"),
        ("SCRIPT", "LOAD", "return 1"),
        ("CLIENT", "ID"),
        ("ECHO", "x"),
    ],
)
def test_the_first_key_is_the_one_redis_finds(
    cluster: ClusterDeployment, command: tuple[str | int | bytes, ...]
) -> None:
    with cluster.nodes[0].client() as client:
        try:
            keys = client.command_getkeys(*command) or [None]  # EVAL of no keys
        except redis.ResponseError as error:
            assert "no key arguments" in str(error)
            keys = [None]
    key = first_key(command)
    assert (key.decode() if isinstance(key, bytes) else key) == keys[0]


async def test_an_empty_batch_has_no_replies(pipe: ClusterPipe) -> None:
    for _ in range(2):  # before the first connection, and on it
        assert await pipe.replies([]) == []
        assert await pipe.execute([("PING",)]) == [b"PONG"]


async def test_a_batch_across_every_master_comes_back_in_order(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    a, b, c = (key_on(cluster, node, "order") for node in masters(cluster))
    batch = [
        ("SET", a, "1"), ("SET", b, "2"), ("PING",), ("SET", c, "3"), ("INCRBY", a, 10),
        ("GET", c), ("ECHO", "after c"), ("HINCRBY", f"{b}:h", "f", 5), ("GET", b), ("GET", a),
    ]  # fmt: skip
    assert await pipe.execute(batch) == [
        b"OK", b"OK", b"PONG", b"OK", 11, b"3", b"after c", 5, b"2", b"11",
    ]  # fmt: skip
    for key, value in ((a, b"11"), (b, b"2"), (c, b"3")):  # each where its slot is served
        with cluster.master_of(key).client() as client:
            assert client.get(key) == value

    async def batch_of(n: int) -> list[object]:
        return await pipe.execute(
            [(("ECHO", f"{n}-{i}") if i % 2 else ("GET", a)) for i in range(n % 5 + 1)]
        )

    replies = await asyncio.gather(*(batch_of(n) for n in range(100)))
    for n, reply in enumerate(replies):
        assert reply == [(f"{n}-{i}".encode() if i % 2 else b"11") for i in range(n % 5 + 1)]


async def test_error_replies_stay_in_their_place(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    a, b, _ = (key_on(cluster, node, "errors") for node in masters(cluster))
    replies = await pipe.replies([("SET", a, "x"), ("INCR", a), ("INCR", b), ("GET", a)])
    assert replies[0] == b"OK" and replies[2:] == [1, b"x"]
    assert isinstance(replies[1], RedisReplyError) and "not an integer" in str(replies[1])
    with pytest.raises(RedisReplyError, match="not an integer"):
        await pipe.execute([("INCR", b), ("INCR", a)])


async def test_a_script_on_several_slots_each_followed_by_wait(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    first, second, third = masters(cluster)
    a, b = key_on(cluster, first, "script"), key_on(cluster, second, "script")
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    await pipe.execute([("SCRIPT", "FLUSH")])  # on every master
    with pytest.raises(RedisReplyError, match="NOSCRIPT"):
        await pipe.execute([("EVALSHA", sha, 1, a, 1)])
    waits = [stat(node, "commandstats", "cmdstat_wait", "calls") for node in (first, second, third)]
    replies = await pipe.execute(
        [
            ("SCRIPT", "LOAD", SCRIPT),
            ("EVALSHA", sha, 1, a, 2),
            ("WAIT", 1, 1000),
            ("EVALSHA", sha, 1, b, 3),
            ("WAIT", 1, 1000),
        ]
    )
    assert replies == [sha.encode(), b"2", 1, b"3", 1]  # one replica holds each write
    for node in (first, second, third):
        with node.client() as client:
            assert client.script_exists(sha) == [True]
    # Each WAIT ran on the master of the script before it.
    after = [stat(node, "commandstats", "cmdstat_wait", "calls") for node in (first, second, third)]
    assert [n - m for n, m in zip(after, waits, strict=True)] == [1, 1, 0]
    # A script of no keys goes to any master.
    assert await pipe.execute([("EVAL", "return 7", 0)]) == [7]


def migrate_slot(
    cluster: ClusterDeployment, slot: int, source: RedisNode, target: RedisNode, keys: bool = True
) -> None:
    """Start moving `slot` from source to target and, with `keys`, move its keys and finish."""
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with target.client() as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    with source.client() as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    if keys:
        finish_migration(cluster, slot, source, target)


def move_keys(source: RedisNode, target: RedisNode, *keys: str) -> None:
    with source.client() as client:
        client.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)


def finish_migration(
    cluster: ClusterDeployment, slot: int, source: RedisNode, target: RedisNode
) -> None:
    with source.client() as client:
        if keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            move_keys(source, target, *(key.decode() for key in keys))
    target_id = cluster.node_id(target)
    for node in (target, source, *(n for n in masters(cluster) if n not in (source, target))):
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


async def test_a_moved_slot_is_followed_and_later_commands_go_to_its_new_master(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    source, target, other = masters(cluster)
    moving, staying = key_on(cluster, source, "moving"), key_on(cluster, other, "staying")
    assert await pipe.execute([("SET", moving, "here"), ("SET", staying, "there")]) == [b"OK"] * 2
    migrate_slot(cluster, slot_of(moving), source, target)
    before, waits = (
        redirects(source, "MOVED"),
        stat(target, "commandstats", "cmdstat_wait", "calls"),
    )
    replies = await pipe.execute([("GET", moving), ("WAIT", 1, 1000), ("GET", staying)])
    assert replies == [b"here", 1, b"there"]
    assert redirects(source, "MOVED") == before + 1
    # The WAIT went again with the command before it.
    assert stat(target, "commandstats", "cmdstat_wait", "calls") == waits + 1
    assert await pipe.execute([("INCRBY", f"{{{moving}}}n", 1), ("GET", moving)]) == [1, b"here"]
    assert redirects(source, "MOVED") == before + 1  # straight to the new master
    with target.client() as client:
        assert client.get(moving) == b"here"


async def test_ask_during_a_migration_leaves_the_map_as_it_is(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    source, target, _ = masters(cluster)
    tag = key_on(cluster, source, "ask")
    gone, kept, new = f"{{{tag}}}gone", f"{{{tag}}}kept", f"{{{tag}}}new"
    slot = slot_of(tag)
    await pipe.execute([("SET", gone, "moved early"), ("SET", kept, "not yet")])
    migrate_slot(cluster, slot, source, target, keys=False)
    try:
        move_keys(source, target, gone)
        asks, moved = redirects(source, "ASK"), redirects(source, "MOVED")
        replies = await pipe.execute(
            [("GET", gone), ("GET", kept), ("SET", new, "made there"), ("WAIT", 0, 0)]
        )
        assert replies == [b"moved early", b"not yet", b"OK", 0]
        assert redirects(source, "ASK") == asks + 2  # the key moved, and the one not there
        assert await pipe.execute([("GET", kept)]) == [b"not yet"]  # still asked of the source
        assert (redirects(source, "ASK"), redirects(source, "MOVED")) == (asks + 2, moved)
        with target.client() as client:
            assert client.execute_command("ASKING") and client.get(new) == b"made there"
    finally:
        finish_migration(cluster, slot, source, target)
    assert await pipe.execute([("GET", gone), ("GET", kept), ("GET", new)]) == [
        b"moved early", b"not yet", b"made there",
    ]  # fmt: skip


async def test_a_slot_no_master_serves_is_tried_again_until_the_read_timeout(
    cluster: ClusterDeployment,
) -> None:
    master, *_ = masters(cluster)
    key = key_on(cluster, master, "unserved")
    slot = slot_of(key)
    pipe = ClusterPipe(replace(cluster.settings(BASE), read_timeout=1.0))
    try:
        await pipe.execute([("SET", key, "v")])
        with master.client() as client:
            client.execute_command("CLUSTER", "DELSLOTS", slot)
        started = time.monotonic()
        with pytest.raises(RedisReplyError, match="CLUSTERDOWN"):
            await pipe.execute([("GET", key)])
        assert 0.8 < time.monotonic() - started < 1.8

        async def serve_again() -> None:
            await asyncio.sleep(0.3)
            with master.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTS", slot)

        serving = asyncio.ensure_future(serve_again())
        assert await pipe.execute([("GET", key)]) == [b"v"]
        await serving
    finally:
        await pipe.close()
        with master.client() as client, contextlib.suppress(redis.ResponseError):
            client.execute_command("CLUSTER", "ADDSLOTS", slot)  # when the test failed early
        cluster._wait(cluster._healthy, "the cluster to serve every slot again")


async def test_the_read_timeout_bounds_a_batch_and_the_next_one_gets_its_own(
    cluster: ClusterDeployment,
) -> None:
    a, b, _ = (key_on(cluster, node, "slow") for node in masters(cluster))
    pipe = ClusterPipe(replace(cluster.settings(BASE), read_timeout=0.3))
    try:
        with pytest.raises(TimeoutError):
            await pipe.execute([("ECHO", "x"), ("GET", b), ("BLPOP", a, "0.45"), ("GET", b)])
        assert await pipe.execute([("RPUSH", a, "late"), ("GET", b)]) == [1, None]
    finally:
        await pipe.close()


async def test_a_broken_connection_fails_its_batch_and_nothing_is_sent_twice(
    cluster: ClusterDeployment, pipe: ClusterPipe
) -> None:
    master, other, _ = masters(cluster)
    tag, elsewhere = key_on(cluster, master, "broken"), key_on(cluster, other, "broken")
    counter, never = f"{{{tag}}}counter", f"{{{tag}}}never"
    _, client_id = await pipe.execute([("INCRBY", counter, 0), ("CLIENT", "ID")])
    waiting = asyncio.ensure_future(
        pipe.execute([("INCR", counter), ("INCR", elsewhere), ("BLPOP", never, 1)])
    )
    await asyncio.sleep(0.1)
    with master.client() as client:
        assert client.client_kill_filter(_id=client_id) == 1
    with pytest.raises(RedisUnavailable):
        await waiting
    assert await pipe.execute([("GET", counter), ("GET", elsewhere)]) == [b"1", b"1"]


async def test_seeds_that_are_down_or_replicas(cluster: ClusterDeployment) -> None:
    settings = cluster.settings(BASE)
    down = settings.hosts[0]
    host, port = down.split(":")
    assert not services.reachable(host, int(port))
    replica = next(node for node in cluster.nodes if node not in masters(cluster))
    for hosts in ((down, *settings.hosts[1:]), (down, f"{replica.host}:{replica.port}")):
        pipe = open_pipe(replace(settings, hosts=hosts))
        assert isinstance(pipe, ClusterPipe)
        try:
            key = unique("seeded")
            assert await pipe.execute([("SET", key, "1"), ("GET", key)]) == [b"OK", b"1"]
        finally:
            await pipe.close()
    pipe = ClusterPipe(replace(settings, hosts=(down,), read_timeout=0.5))
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await asyncio.wait_for(pipe.execute([("PING",)]), 2)


def test_open_pipe_gives_a_redis_pipe_outside_cluster_mode() -> None:
    assert isinstance(open_pipe(BASE), RedisPipe)
    assert isinstance(open_pipe(replace(BASE, mode="sentinel")), RedisPipe)


@pytest.fixture
def secured_cluster(tmp_path: Path) -> Iterator[ClusterDeployment]:
    access = Access(tls=make_tls(tmp_path / "tls"), acl=True)
    with ClusterDeployment(tmp_path / "cluster", access) as deployment:
        yield deployment


async def test_over_tls_as_an_acl_user_across_a_failover(
    secured_cluster: ClusterDeployment,
) -> None:
    cluster = secured_cluster
    first, second, _ = masters(cluster)
    lost, kept = key_on(cluster, first, "failover"), key_on(cluster, second, "failover")
    settings = cluster.settings(BASE)
    pipe, refused, demoted = (ClusterPipe(settings) for _ in range(3))
    try:
        whoami = [("ACL", "WHOAMI"), ("SET", lost, "1"), ("WAIT", 1, 1000), ("SET", kept, "2")]
        assert await pipe.execute(whoami) == [b"gateway", b"OK", 1, b"OK"]
        for other in (refused, demoted):  # the map read, never a connection to the first master
            assert await other.execute([("GET", kept)]) == [b"2"]
        old = cluster.kill_master_of(lost)
        try:
            await pipe.execute([("GET", lost)])
        except RedisUnavailable:
            pass  # the connection broke, and the map still names the dead master
        except RedisReplyError as error:
            assert "CLUSTERDOWN" in str(error)  # the cluster saw it fail
        else:
            raise AssertionError("a dead master served")
        new = cluster.wait_for_failover(lost, old)
        assert new is not old
        # The dead master refuses the connection: the map read again names the promoted one.
        assert await refused.execute([("GET", lost), ("GET", kept)]) == [b"1", b"2"]
        for _ in range(20):  # the first pipe too, once it has reread the map
            try:
                assert await pipe.execute([("GET", lost)]) == [b"1"]
                break
            except (RedisUnavailable, RedisReplyError):
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the pipe never reached the promoted master")
        # Back, as the new master's replica, the old one answers MOVED for its old slots.
        old.start()
        cluster._wait(lambda: role(old) == b"slave", "the old master to rejoin")
        assert await demoted.execute([("INCRBY", lost, 1), ("GET", kept)]) == [2, b"2"]
        assert redirects(old, "MOVED") == 1
        with new.client() as client:
            assert client.get(lost) == b"2"
    finally:
        for each in (pipe, refused, demoted):
            await each.close()
