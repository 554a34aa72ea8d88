"""Redis Cluster hash slots: which slot a key is in, a command's first key (which it is routed
by), and a hash tag that lands in a given slot.

Redis hashes a key's hash tag (the text between its first `{` and the next `}`, when not empty)
or else the whole key with CRC16-XMODEM, modulo 16384; binascii's crc_hqx is that CRC.
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Sequence

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


# Where a command's first key is: its first argument, but for these.
_AFTER_COUNT = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}  # if count > 0
_NO_KEY = {
    "WAIT", "PING", "ECHO", "SCRIPT", "CLIENT", "CONFIG", "INFO", "CLUSTER", "ROLE", "ACL", "TIME",
    "DBSIZE", "FLUSHALL", "FLUSHDB", "COMMAND", "FUNCTION", "SLOWLOG", "LATENCY", "LASTSAVE",
    "HELLO", "AUTH", "READONLY", "READWRITE", "ASKING", "MULTI", "EXEC", "DISCARD", "PUBLISH",
}  # fmt: skip
_positions: dict[object, int] = {}  # by a command's name as spelled: a few spellings


def first_key(command: Sequence[str | int | bytes]) -> str | int | bytes | None:
    """The first key of `command` (its name first); None for a command of no key."""
    name = command[0]
    at = _positions.get(name)
    if at is None:
        word = (name.decode() if isinstance(name, bytes) else str(name)).upper()
        at = _positions[name] = 3 if word in _AFTER_COUNT else 0 if word in _NO_KEY else 1
    if at == 1:
        return command[1] if len(command) > 1 else None
    if at == 3 and len(command) > 3 and int(command[2]) > 0:
        return command[3]
    return None


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
