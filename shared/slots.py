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


def word_of(part: str | int | bytes) -> str:
    """A command's name or keyword in capitals: Redis reads either in any case."""
    return (part.decode() if isinstance(part, bytes) else str(part)).upper()


# Where a command's first key is: its first argument, but for these. 3: after the count of keys,
# if it is above 0; 2: after the subcommand; -n: after the word STREAMS, looked for from the
# n-th argument on (past XREADGROUP's group and consumer, which may be named so); 0: none.
_AT = {
    **dict.fromkeys(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"), 3),
    "XGROUP": 2, "XREAD": -1, "XREADGROUP": -4,
    **dict.fromkeys((
        "WAIT", "PING", "ECHO", "SCRIPT", "CLIENT", "CONFIG", "INFO", "CLUSTER", "ROLE", "ACL",
        "TIME", "DBSIZE", "FLUSHALL", "FLUSHDB", "COMMAND", "FUNCTION", "SLOWLOG", "LATENCY",
        "LASTSAVE", "HELLO", "AUTH", "READONLY", "READWRITE", "ASKING", "MULTI", "EXEC",
        "DISCARD", "PUBLISH",
    ), 0),
}  # fmt: skip
_positions: dict[object, int] = {}  # by a command's name as spelled: a few spellings


def first_key(command: Sequence[str | int | bytes]) -> str | int | bytes | None:
    """The first key of `command` (its name first); None for a command of no key."""
    name = command[0]
    at = _positions.get(name)
    if at is None:
        at = _positions[name] = _AT.get(word_of(name), 1)
    if at == 1:
        return command[1] if len(command) > 1 else None
    if at == 3:
        return command[3] if len(command) > 3 and int(command[2]) > 0 else None
    if at == 2:
        return command[2] if len(command) > 2 else None
    if at < 0:
        for i in range(-at, len(command) - 1):
            part = command[i]
            if not isinstance(part, int) and len(part) == 7 and word_of(part) == "STREAMS":
                return command[i + 1]
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
