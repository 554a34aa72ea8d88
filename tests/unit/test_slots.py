"""Slots as Redis Cluster computes them (redis-py's own implementation as the reference)."""

from __future__ import annotations

import random

import pytest
from redis.crc import key_slot

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
