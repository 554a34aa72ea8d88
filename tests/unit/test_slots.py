"""Slots as Redis Cluster computes them (redis-py's own implementation as the reference)."""

from __future__ import annotations

import random

import pytest
from redis.crc import key_slot

from shared.limit_keys import (
    EVENTS_STREAM,
    SPEND_MARKER,
    SPEND_RESTORE_CUTOFF,
    SPEND_RESTORE_LOCK,
    Layout,
    settle_sequence_key,
)
from shared.slots import SLOTS, companion_tag, slot_of, slot_tag


@pytest.mark.parametrize(
    "key", ["foo", "{user1000}.following", "gw:{key-1}:spend", "a{}b", "{}{x}", "x{y", "é{ü}"]
)
def test_slot_of_is_redis_clusters_slot(key: str) -> None:
    assert slot_of(key) == key_slot(key.encode())


def test_every_slot_has_a_tag_that_hashes_to_it() -> None:
    tags = [slot_tag(slot) for slot in range(SLOTS)]
    assert [slot_of(f"gw:events:{{{tag}}}") for tag in tags] == list(range(SLOTS))


def test_a_keys_companions_share_its_slot() -> None:
    for key_id in (f"{random.getrandbits(64):x}" for _ in range(200)):
        counters = f"gw:{{{key_id}}}:spend"
        assert slot_of(f"gw:spend-epoch:{{{companion_tag(counters)}}}") == slot_of(counters)


def test_on_one_redis_the_companions_are_the_global_ones() -> None:
    layout, counters = Layout(), "gw:{k1}:spend"
    assert (layout.stream(counters), layout.marker(counters), layout.sequence("r", counters)) == (
        EVENTS_STREAM,
        SPEND_MARKER,
        settle_sequence_key("r"),
    )


def test_in_a_cluster_each_slot_has_companions_of_its_own() -> None:
    layout = Layout(cluster=True)
    first, second = "gw:{k1}:spend", "gw:{k2}:rate:m"
    names = [layout.stream(first), layout.marker(first), layout.sequence("r", first)]
    assert {slot_of(name) for name in names} == {slot_of(first)}
    assert layout.stream(first) != layout.stream(second)
    assert layout.stream(first).startswith(EVENTS_STREAM + ":{")


def test_the_restore_companions_are_global_on_one_redis_and_per_slot_in_a_cluster() -> None:
    counters = "gw:{k1}:spend"
    assert (Layout().restore_lock(counters), Layout().restore_cutoff(counters)) == (
        SPEND_RESTORE_LOCK,
        SPEND_RESTORE_CUTOFF,
    )
    cluster = Layout(cluster=True)
    names = [cluster.restore_lock(counters), cluster.restore_cutoff(counters)]
    assert {slot_of(name) for name in names} == {slot_of(counters)}
    assert names[0].startswith(SPEND_RESTORE_LOCK + ":{")
    # A name the slot's stream gives leads to the same slot's companions.
    assert cluster.restore_cutoff(cluster.stream(counters)) == names[1]
