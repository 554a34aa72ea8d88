"""Redis Cluster hash slots: which slot a key is in, and a hash tag that lands in a given slot.

Redis hashes a key's hash tag (the text between its first `{` and the next `}`, when not empty)
or else the whole key with CRC16-XMODEM, modulo 16384; binascii's crc_hqx is that CRC.
"""

from __future__ import annotations

import binascii
import functools

SLOTS = 16384


def hashed_part(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def slot_of(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return binascii.crc_hqx(hashed_part(raw), 0) % SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """The shortest decimal numeral of each slot (about 110,000 CRCs, 0.1 s: built on first use)."""
    tags: list[str | None] = [None] * SLOTS
    missing, number = SLOTS, 0
    while missing:
        tag = str(number)
        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot], missing = tag, missing - 1
        number += 1
    return tuple(tag for tag in tags if tag is not None)


def slot_tag(slot: int) -> str:
    """A hash tag whose keys are in `slot`: a slot's companions (its event stream, its spend
    marker) are named with it, so that one script reaches them with the keys of that slot."""
    return _slot_tags()[slot]


def companion_tag(key: str) -> str:
    """The hash tag of the companions of `key`'s slot."""
    return slot_tag(slot_of(key))
