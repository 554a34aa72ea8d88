"""The settle and record script calls of a batch, one per slot that the batch touches.

On one Redis every key's companions are the same, so a batch is one call, as it always was. In a
cluster a call may touch one slot only: the batch is split by the slot of each key's (and each
end user's) counters, every part with that slot's event stream, settle numbers and marker.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.limit_keys import (
    EVENT_FIELD,
    EVENTS_MAX_LENGTH,
    MAX_CALL_NANO,
    SETTLE_SEQUENCE_TTL_MS,
    WINDOW_BUCKETS,
    KeyArgs,
    Layout,
    Script,
    UserArgs,
    rate_key,
    rate_windows,
)
from shared.models import UNIT_SECONDS, Key, User
from shared.redispipe import Command

if TYPE_CHECKING:
    from shared.limits import Settlement


@dataclass(slots=True)
class SettlePart:
    """The settlements of one batch whose counters are in one slot (settle.lua's arguments)."""

    stream: str
    sequence: str
    events: list[bytes] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)
    charges: list[int | str | bytes] = field(default_factory=list)
    charged: list[int] = field(default_factory=list)  # the batch index of each charge

    def charge(
        self, index: int, keys: tuple[str, ...], cost: int, window_ms: int, reservation: str
    ) -> None:
        self.charged.append(index)
        self.counters += keys
        self.charges += [cost, window_ms, reservation]

    def command(self, script: Script, number: int) -> Command:
        return script.call(
            [self.stream, self.sequence, *self.counters],
            [
                EVENTS_MAX_LENGTH, EVENT_FIELD, number, SETTLE_SEQUENCE_TTL_MS, len(self.events),
                *self.events, *self.charges,
            ],
        )  # fmt: skip


def settle_parts(
    settlements: list[Settlement],
    replica: str,
    layout: Layout,
    key_args: Callable[[Key], KeyArgs],
    user_args: Callable[[User], UserArgs],
) -> list[SettlePart]:
    parts: dict[str, SettlePart] = {}

    def part_of(counter: str) -> SettlePart:
        stream = layout.stream(counter)
        part = parts.get(stream)
        if part is None:
            part = parts[stream] = SettlePart(stream, layout.sequence(replica, counter))
        return part

    for index, settlement in enumerate(settlements):
        args = key_args(settlement.key)
        own = part_of(args.settle_keys[0])
        if settlement.event is not None:
            own.events.append(settlement.event)
        if settlement.cost_nano or settlement.reservation:
            cost = min(settlement.cost_nano, MAX_CALL_NANO)
            own.charge(index, args.settle_keys, cost, args.settle_window_ms, settlement.reservation)
            if settlement.user is not None:  # charged alike, as one more call of the batch
                user = user_args(settlement.user)
                part_of(user.settle_keys[0]).charge(
                    index, user.settle_keys, cost, user.settle_window_ms, settlement.reservation
                )
    return list(parts.values())


def record_calls(
    admissions: list[tuple[Key, int]], layout: Layout, script: Script
) -> list[Command]:
    """record.lua's calls counting `admissions` (key, wall-clock ms) in their rate windows, in
    the buckets of their times: one call per spend marker, so per slot in a cluster."""
    counts: dict[str, collections.Counter[int]] = {}
    windows: dict[str, int] = {}
    for key, at_ms in admissions:
        first, extra = rate_windows(key)
        units = {*extra, *((key.rate_limit_unit,) if first else ())}
        for unit in units:  # every window the admission counted in
            name, window_ms = rate_key(key.key_id, unit), UNIT_SECONDS[unit] * 1000
            # As the admit script computes a bucket: floor(ms / (window / BUCKETS)).
            bucket = math.floor(at_ms / (window_ms / WINDOW_BUCKETS))
            counts.setdefault(name, collections.Counter())[bucket] += 1
            windows[name] = window_ms
    by_marker: dict[str, tuple[list[str], list[int | str | bytes]]] = {}
    for name, buckets in counts.items():
        keys, args = by_marker.setdefault(layout.marker(name), ([], []))
        keys.append(name)
        args += [windows[name] + math.ceil(windows[name] / WINDOW_BUCKETS), len(buckets)]
        for bucket, n in buckets.items():
            args += [bucket, n]
    if not by_marker:  # nothing to count: still asks whether Redis holds its data
        by_marker[layout.marker("")] = ([], [])
    return [script.call([marker, *keys], args) for marker, (keys, args) in by_marker.items()]
