"""keymgmt on a Redis Cluster (three masters with a replica each, TLS, an ACL user): the event
stream and the spend marker of every slot, consumed and restored slot by slot."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.app import create_app
from keymgmt.event_rows import redis_time
from keymgmt.event_streams import GROUP, LOOK_SECONDS
from keymgmt.events import EventConsumer
from keymgmt.slot_batches import CHUNK, SlotBatches, connect
from keymgmt.spend import rebuild_all_spend, restore_lost_spend
from shared.config import Settings
from shared.db import usage_events_rejected
from shared.limit_keys import EVENT_FIELD, Layout, spend_key
from shared.metrics import Metrics
from shared.runtime import stop_task
from shared.slots import SLOTS, slot_of, slot_tag
from tests.integration.test_events_consumer import Died, event, rows_for
from tests.integration.test_spend_restore import add_key, ago, record
from tests.redisdeploy import Access, ClusterDeployment, RedisNode, make_tls

CLUSTER = Layout(cluster=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    directory: Path = tmp_path_factory.mktemp("cluster")
    access = Access(tls=make_tls(directory / "tls"), acl=True)
    with ClusterDeployment(directory / "nodes", access) as deployment:
        yield deployment


@pytest.fixture
def cluster_settings(cluster: ClusterDeployment, settings: Settings) -> Settings:
    return replace(settings, redis=cluster.settings(settings.redis))


def flush(cluster: ClusterDeployment) -> None:
    for node in cluster.live():
        with node.client() as client:
            if client.role()[0] == b"master":
                client.flushall()


@pytest.fixture
async def pipes(
    cluster: ClusterDeployment, cluster_settings: Settings
) -> AsyncIterator[SlotBatches]:
    """keymgmt's Redis on the cluster, which each test finds empty, as a fresh cluster is."""
    flush(cluster)
    client = connect(cluster_settings.redis, max_connections=4)
    assert isinstance(client, SlotBatches)
    yield client
    await client.aclose()


def stream_of(key_id: str) -> str:
    return CLUSTER.stream(spend_key(key_id))


async def append(pipes: SlotBatches, entries: list[tuple[str, dict[str, bytes]]]) -> list[bytes]:
    """Entries added to streams as the settle script adds them, stream by stream."""
    commands = [
        ("XADD", stream, "*", *(part for item in fields.items() for part in item))
        for stream, fields in entries
    ]
    return await pipes.execute(commands)


async def set_every_marker(pipes: SlotBatches) -> None:
    markers = [CLUSTER.marker(slot_tag(slot)) for slot in range(SLOTS)]
    await pipes.execute([("SET", marker, "test") for marker in markers])


async def count_markers(pipes: SlotBatches) -> int:
    markers = [CLUSTER.marker(slot_tag(slot)) for slot in range(SLOTS)]
    return sum(await pipes.execute([("EXISTS", marker) for marker in markers]))


def consumer(pipes: SlotBatches, engine: AsyncEngine, name: str, **options: Any) -> EventConsumer:
    written = Metrics().counter("written_total", "events written")
    return EventConsumer(pipes, engine, written, name=name, **{"claim_idle_ms": 0, **options})


def on_every_master(cluster: ClusterDeployment, key_ids: list[str]) -> None:
    """Some of the keys' counters are on each master (the masters share the slots in thirds)."""
    by_third = {slot_of(key_id) * 3 // SLOTS: key_id for key_id in key_ids}
    assert len({cluster.master_of(spend_key(key_id)).port for key_id in by_third.values()}) == 3


def served_by(node: RedisNode) -> set[int]:
    with node.client() as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    return {
        slot
        for start, end, master, *_ in ranges
        if int(master[1]) == node.port
        for slot in range(start, end + 1)
    }


async def spend_of(pipes: SlotBatches, key_id: str) -> int:
    (value,) = await pipes.execute([("GET", spend_key(key_id))])
    return int(value or 0)


@pytest.mark.parametrize("dies", ["before commit", "after commit, before ack"])
async def test_events_in_the_streams_of_many_slots_reach_postgres_once(
    pipes: SlotBatches,
    engine: AsyncEngine,
    cluster: ClusterDeployment,
    monkeypatch: pytest.MonkeyPatch,
    dies: str,
) -> None:
    await set_every_marker(pipes)
    key_ids = [str(uuid.uuid4()) for _ in range(300)]
    on_every_master(cluster, key_ids)
    hot = key_ids[0]  # a busy key: its stream is far longer than one pass's share
    sent = [(stream_of(k), event(k, n)) for k in key_ids for n in range(3)]
    sent += [(stream_of(hot), event(hot, 100 + n)) for n in range(1200)]
    await append(pipes, sent)

    first = consumer(pipes, engine, "first")
    if dies == "before commit":
        monkeypatch.setattr(first, "_write", _die)
    else:
        monkeypatch.setattr(first._streams, "done", _die)
    with pytest.raises(Died):
        await first.consume_once()
    monkeypatch.undo()

    second = consumer(pipes, engine, "second")
    passes = 0
    while await second.consume_once():
        passes += 1
    assert passes < 30  # the hot stream is read in large shares, not one entry a pass
    for key_id in key_ids[1:]:
        rows = await rows_for(engine, key_id)
        assert sorted(row.request_id for row in rows) == ["req-0", "req-1", "req-2"]
    assert len({row.request_id for row in await rows_for(engine, hot)}) == 1203
    assert len(await rows_for(engine, hot)) == 1203
    streams = {stream for stream, _ in sent}
    pending = await pipes.execute([("XPENDING", s, GROUP) for s in streams])
    assert {reply[0] for reply in pending} == {0}
    (length,) = await pipes.execute([("XLEN", stream_of(hot))])
    assert length <= 300  # trimmed below what was written (whole nodes of 100 entries)


async def _die(*_: Any, **__: Any) -> None:
    raise Died


async def test_a_stream_is_not_trimmed_while_its_slot_has_lost_the_spend(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    key_ids = [str(uuid.uuid4()) for _ in range(2)]
    await set_every_marker(pipes)
    lost = CLUSTER.marker(spend_key(key_ids[0]))
    await pipes.execute([("DEL", lost)])
    await append(pipes, [(stream_of(k), event(k, n)) for k in key_ids for n in range(600)])
    reader = consumer(pipes, engine, "only")
    while await reader.consume_once():
        pass
    lengths = await pipes.execute([("XLEN", stream_of(k)) for k in key_ids])
    assert lengths[0] == 600  # the restore reads its first entry
    assert lengths[1] < 600


async def test_a_stream_that_appears_later_is_found(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    assert slot_of(early) != slot_of(late)
    await append(pipes, [(stream_of(early), event(early, 1))])
    running = asyncio.create_task(consumer(pipes, engine, "c", block_ms=100).run())
    try:
        await _until(lambda: rows_for(engine, early), 5)
        (exists,) = await pipes.execute([("EXISTS", stream_of(late))])
        assert not exists
        await append(pipes, [(stream_of(late), event(late, 2))])
        started = time.monotonic()
        await _until(lambda: rows_for(engine, late), LOOK_SECONDS + 5)
        assert time.monotonic() - started < LOOK_SECONDS + 2
    finally:
        await stop_task(running)


async def _until(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return found


async def test_entries_of_two_streams_with_one_id_are_both_kept_aside(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    """Each stream numbers its own entries: alike ids of two slots are two entries."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    entry_id = f"{int(time.time() * 1000)}-0"
    malformed = {EVENT_FIELD: b"not json"}
    for key_id in (first, second):
        stream = stream_of(key_id)
        await pipes.execute([("XADD", stream, entry_id, EVENT_FIELD, malformed[EVENT_FIELD])])
    reader = consumer(pipes, engine, "only")
    while await reader.consume_once():
        pass
    names = [f"{stream_of(key_id)}/{entry_id}" for key_id in (first, second)]
    async with engine.connect() as connection:
        query = sa.select(usage_events_rejected.c.entry_id).where(
            usage_events_rejected.c.entry_id.in_(names)
        )
        assert sorted(await connection.scalars(query)) == sorted(names)


async def test_a_fresh_cluster_gets_every_marker_and_the_spend(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 4321, ago(60))
    assert await count_markers(pipes) == 0
    started = time.perf_counter()
    assert await restore_lost_spend(engine, pipes)
    elapsed = time.perf_counter() - started
    assert await count_markers(pipes) == SLOTS
    assert await spend_of(pipes, key.key_id) == 4321
    assert not await restore_lost_spend(engine, pipes)
    assert elapsed < 10, elapsed  # 16384 slots: under 2 s here


async def test_a_restore_of_every_slot_goes_in_bounded_batches(
    pipes: SlotBatches, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch of a command per slot would outlast the read timeout on a busy cluster, and
    keep the other callers of its connections waiting behind it."""
    sent: list[list[Any]] = []
    replies = pipes.pipe.replies

    async def recorded(commands: Any) -> list[Any]:
        sent.append(list(commands))
        return await replies(commands)

    monkeypatch.setattr(pipes.pipe, "replies", recorded)
    assert await restore_lost_spend(engine, pipes)
    assert max(len(batch) for batch in sent) <= CHUNK + 1
    calls = [batch for batch in sent if batch[0][0] == "SCRIPT"]  # loaded on every master
    assert sum(len(batch) - 1 for batch in calls) == 3 * SLOTS  # cutoff, apply, unlock
    assert all(command[0] == "EVALSHA" for batch in calls for command in batch[1:])
    assert sum(len(batch) for batch in sent if batch not in calls) == 2 * SLOTS  # marker, lock


async def test_a_master_that_lost_its_data_gets_its_keys_spend_back(
    pipes: SlotBatches, engine: AsyncEngine, cluster: ClusterDeployment
) -> None:
    keys = [await add_key(engine, cost_limit_in_usd=1.0) for _ in range(30)]
    key_ids = [key.key_id for key in keys]
    on_every_master(cluster, key_ids)
    for n, key_id in enumerate(key_ids):
        await record(engine, key_id, 1000 + n, ago(60))
    assert await restore_lost_spend(engine, pipes)
    # Charges Redis holds whose events are not yet in Postgres: a restore must not undo them.
    await pipes.execute([("INCRBY", spend_key(k), 5) for k in key_ids])
    lost = cluster.master_of(spend_key(key_ids[0]))
    with lost.client() as client:
        client.flushall()
    assert await count_markers(pipes) < SLOTS
    assert await restore_lost_spend(engine, pipes)
    assert await count_markers(pipes) == SLOTS
    lost_slots = served_by(lost)
    assert 0 < sum(slot_of(k) in lost_slots for k in key_ids) < len(key_ids)
    for n, key_id in enumerate(key_ids):
        on_lost = slot_of(key_id) in lost_slots
        assert await spend_of(pipes, key_id) == 1000 + n + (0 if on_lost else 5), key_id
    assert not await restore_lost_spend(engine, pipes)


async def test_replicas_restoring_at_once_share_the_slots_and_restore_each_once(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    keys = [await add_key(engine, cost_limit_in_usd=1.0) for _ in range(20)]
    for n, key in enumerate(keys):
        await record(engine, key.key_id, 100 + n, ago(60))
    results = await asyncio.gather(*(restore_lost_spend(engine, pipes) for _ in range(4)))
    assert any(results)
    assert await count_markers(pipes) == SLOTS
    assert [await spend_of(pipes, key.key_id) for key in keys] == [100 + n for n in range(20)]
    assert not await restore_lost_spend(engine, pipes)


async def test_each_slot_is_restored_from_its_own_cutoff(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    """One slot lost its data and took new charges; another lost its data later: the charges
    of each before its own loss are restored, and only those."""
    early = await add_key(engine, cost_limit_in_usd=1.0)
    later = await add_key(engine, cost_limit_in_usd=1.0)
    assert slot_of(early.key_id) != slot_of(later.key_id)
    (now,) = await pipes.execute([("TIME",)])
    first_ms = int(now[0]) * 1000 + int(now[1]) // 1000 - 5000
    await record(engine, early.key_id, 1000, ago(120))
    await record(engine, later.key_id, 500, ago(120))
    # The early slot's first charge after its loss: in its new stream, counter and Postgres.
    stream = stream_of(early.key_id)
    await pipes.execute(
        [
            ("XADD", stream, f"{first_ms}-0", EVENT_FIELD, b"{}"),
            ("INCRBY", spend_key(early.key_id), 30),
        ]
    )
    await record(engine, early.key_id, 30, redis_time(first_ms))
    # Charged into the later slot's Redis after that, and lost with it.
    await record(engine, later.key_id, 70, redis_time(first_ms + 1000))
    assert await restore_lost_spend(engine, pipes)
    assert await spend_of(pipes, early.key_id) == 1030
    assert await spend_of(pipes, later.key_id) == 570


async def test_rebuild_sets_every_slot_from_postgres(
    pipes: SlotBatches, engine: AsyncEngine
) -> None:
    key = await add_key(engine, cost_limit_in_usd=1.0)
    await record(engine, key.key_id, 2500, ago(60))
    await pipes.execute([("SET", spend_key(key.key_id), 99)])
    assert await rebuild_all_spend(engine, pipes) >= 1
    assert await spend_of(pipes, key.key_id) == 2500
    markers = [CLUSTER.marker(slot_tag(slot)) for slot in range(SLOTS)]
    values = await pipes.execute([("GET", marker) for marker in markers])
    assert set(values) == {b"rebuilt"}


async def test_keymgmt_on_a_cluster_sets_the_markers_and_writes_the_events(
    aiohttp_client: Any, pipes: SlotBatches, engine: AsyncEngine, cluster_settings: Settings
) -> None:
    key_id = str(uuid.uuid4())
    await append(pipes, [(stream_of(key_id), event(key_id, 1))])
    client = await aiohttp_client(create_app(cluster_settings))
    assert (await client.get("/api/health")).status == 200
    (row,) = await _until(lambda: rows_for(engine, key_id), 10)
    assert row.request_id == "req-1"
    assert await _until(lambda: _all_markers(pipes), 10)


async def _all_markers(pipes: SlotBatches) -> bool:
    return await count_markers(pipes) == SLOTS


async def test_the_consumer_and_the_restore_follow_a_failover(
    pipes: SlotBatches, engine: AsyncEngine, cluster: ClusterDeployment
) -> None:
    """Last of the module: the killed master stays down, its replica serves its slots."""
    await set_every_marker(pipes)
    key_id = str(uuid.uuid4())
    await append(pipes, [(stream_of(key_id), event(key_id, 1))])
    running = asyncio.create_task(consumer(pipes, engine, "c", block_ms=100).run())
    try:
        await _until(lambda: rows_for(engine, key_id), 5)
        old = cluster.kill_master_of(spend_key(key_id))
        new = await asyncio.to_thread(cluster.wait_for_failover, spend_key(key_id), old)
        assert new is not old
        await _until(lambda: _appended(pipes, key_id, 2), 10)  # once the map is the new one
        rows = await _until(lambda: _rows(engine, key_id, 2), 10)
        assert sorted(row.request_id for row in rows) == ["req-1", "req-2"]
    finally:
        await stop_task(running)
    assert not await restore_lost_spend(engine, pipes)  # the replica had every marker


async def _appended(pipes: SlotBatches, key_id: str, n: int) -> bool:
    try:
        await append(pipes, [(stream_of(key_id), event(key_id, n))])
    except ConnectionError:  # RedisUnavailable: the first batch finds the old master gone
        return False
    return True


async def _rows(engine: AsyncEngine, key_id: str, count: int) -> list[Any]:
    rows = await rows_for(engine, key_id)
    return rows if len(rows) >= count else []
