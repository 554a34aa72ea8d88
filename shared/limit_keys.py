"""Redis key names, Lua scripts and the script arguments of the limit engine.

Amounts are integers in nano-USD, so that Redis adds them exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from shared.config import RedisSettings
from shared.models import UNIT_SECONDS, Key, User
from shared.redispipe import Command
from shared.slots import companion_tag

PREFIX = "gw:"
NANO_PER_USD = 1_000_000_000
# Buckets of a sliding window: its hash field is floor(ms / (window ms / WINDOW_BUCKETS)). The
# scripts in lua/ say the same as `local BUCKETS`.
WINDOW_BUCKETS = 60
# What one call can reserve or be charged at most, in nano-USD ($1,000,000): more means a request
# or a usage report no real call makes, and uncapped it would overflow Redis's 64-bit counters.
MAX_CALL_NANO = 10**15
# Usage events wait here for keymgmt to write them to Postgres. Trimmed (approximately) past this
# length, so a keymgmt outage of about this many calls loses no event; a longer one loses the
# oldest events, never spend, which the counters hold.
EVENTS_STREAM = f"{PREFIX}events"
EVENTS_MAX_LENGTH = 1_000_000
EVENT_FIELD = "event"  # an entry's one field: the event as a JSON object
# Each replica numbers its settle batches; Redis keeps the last number it applied, so that a batch
# whose reply was lost and that is sent again is not applied twice. A number is forgotten once its
# replica has applied nothing for this long (it is gone).
SETTLE_SEQUENCE_TTL_MS = 24 * 3600 * 1000


# Every proxy process announces itself here (member: its id, score: when the announcement
# lapses, ms), so that each knows how many share the keys' limits while Redis is away.
REPLICAS = f"{PREFIX}replicas"


def settle_sequence_key(replica: str) -> str:
    return f"{PREFIX}settle-seq:{replica}"


def to_nano(usd: float) -> int:
    return round(usd * NANO_PER_USD)


def to_usd(nano: int | float) -> float:
    return nano / NANO_PER_USD


# Present while Redis holds the spend it has been given; gone when Redis lost its data.
SPEND_MARKER = f"{PREFIX}spend-epoch"
# keymgmt's, while it gives a Redis that lost its data the spend back: who restores, and since
# when that Redis holds its charges.
SPEND_RESTORE_LOCK = f"{PREFIX}spend-restore-lock"
SPEND_RESTORE_CUTOFF = f"{PREFIX}spend-restore-cutoff"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a key's companions live: the event stream its settlements append to, the spend
    marker its admissions check, a replica's settle numbers, the restore's lock and cutoff. On
    one Redis, one of each for all keys; in a cluster, one of each per slot, named with a tag
    that lands in that slot, so that every script call touches one slot. keymgmt looks for each
    slot's stream by its name."""

    cluster: bool = False

    @classmethod
    def of(cls, settings: RedisSettings) -> Layout:
        return cls(cluster=settings.mode == "cluster")

    def _in_slot_of(self, name: str, key: str) -> str:
        return f"{name}:{{{companion_tag(key)}}}" if self.cluster else name

    def stream(self, key: str) -> str:
        return self._in_slot_of(EVENTS_STREAM, key)

    def marker(self, key: str) -> str:
        return self._in_slot_of(SPEND_MARKER, key)

    def sequence(self, replica: str, key: str) -> str:
        return self._in_slot_of(settle_sequence_key(replica), key)

    def restore_lock(self, key: str) -> str:
        return self._in_slot_of(SPEND_RESTORE_LOCK, key)

    def restore_cutoff(self, key: str) -> str:
        return self._in_slot_of(SPEND_RESTORE_CUTOFF, key)


ONE_REDIS = Layout()


def spend_key(key_id: str) -> str:
    return f"{PREFIX}{{{key_id}}}:spend"


def rate_key(key_id: str, unit: str) -> str:
    """A key's rate buckets for windows of one unit: every window of that unit counts in it."""
    return f"{PREFIX}{{{key_id}}}:rate:{unit}"


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> Script:
        return cls.of(resources.files("shared").joinpath("lua", name).read_text())

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

    def call(self, keys: Sequence[str], args: Sequence[int | str | bytes]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    @property
    def load(self) -> Command:
        return ("SCRIPT", "LOAD", self.source)


@dataclass(frozen=True, slots=True)
class KeyNames:
    """Every Redis key the engine writes for one gateway key, built in this one place."""

    rate: str
    spend: str
    window_spend: str
    reservations: str
    reserved: str

    @classmethod
    def of(cls, key: Key) -> KeyNames:
        # The hash tag keeps one key's data in one cluster slot; the unit in the windowed names
        # starts a fresh window when a PATCH changes the unit.
        base = f"{PREFIX}{{{key.key_id}}}:"
        return cls(
            rate=rate_key(key.key_id, key.rate_limit_unit),
            spend=spend_key(key.key_id),
            window_spend=f"{base}wspend:{key.cost_limit_in_usd_unit}",
            reservations=f"{base}res",
            reserved=f"{base}resamt",
        )


def rate_windows(key: Key) -> tuple[int, dict[str, int]]:
    """The first window's limit and the extra windows' (rateLimits), unit -> limit.

    Every window counts every admitted call, so windows of one unit count alike: they share one
    counter (KeyNames.rate's name is by unit), and the strictest limit of a unit is the one held.
    A unit of the first window folds into it."""
    extra: dict[str, int] = {}
    for limit, unit in key.rate_limits:
        extra[unit] = min(limit, extra.get(unit, limit))
    first = key.rate_limit_over_time
    if first and key.rate_limit_unit in extra:
        first = min(first, extra.pop(key.rate_limit_unit))
    return first, extra


# The admit script's arguments for no extra rate windows, and for no end user.
NO_EXTRA_WINDOWS = (0,)
NO_USER = (0,)

# Where an admission is counted: (reservation expiries, reservation amounts), and each rate
# window's buckets with the window's length (ms).
Counted = tuple[tuple[str, str], list[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class KeyArgs:
    """The script keys and arguments fixed by one version of a gateway key."""

    admit_keys: tuple[str, ...]
    # Rate limit, rate window ms, lifetime and windowed cost limits (nano-USD), cost window ms.
    admit_limits: tuple[int, ...]
    settle_keys: tuple[str, ...]
    settle_window_ms: int  # 0 when the key has no windowed cost limit
    # The extra rate windows: their buckets, and their count then each one's limit and ms.
    extra_keys: tuple[str, ...] = ()
    extra_args: tuple[int, ...] = NO_EXTRA_WINDOWS

    def counted(self) -> Counted:
        """Where an admission of the key is counted: its reservations and its rate windows."""
        first = [(self.admit_keys[0], self.admit_limits[1])] if self.admit_limits[0] else []
        extra = zip(self.extra_keys, self.extra_args[2::2], strict=True)
        return (self.admit_keys[3], self.admit_keys[4]), [*first, *extra]

    @classmethod
    def of(cls, key: Key, layout: Layout = ONE_REDIS) -> KeyArgs:
        names = KeyNames.of(key)
        cost_window_ms = key.cost_window_seconds * 1000
        first_rate, extra = rate_windows(key)
        extra_args = [len(extra)]
        for unit, limit in extra.items():
            extra_args += [limit, UNIT_SECONDS[unit] * 1000]
        return cls(
            (
                names.rate,
                names.spend,
                names.window_spend,
                names.reservations,
                names.reserved,
                layout.marker(names.spend),
            ),
            (
                first_rate,
                key.rate_window_seconds * 1000,
                to_nano(key.cost_limit_in_usd),
                to_nano(key.cost_limit_in_usd_over_time),
                cost_window_ms,
            ),
            (names.spend, names.window_spend, names.reservations, names.reserved),
            cost_window_ms if key.cost_limit_in_usd_over_time else 0,
            tuple(rate_key(key.key_id, unit) for unit in extra),
            tuple(extra_args),
        )


@dataclass(frozen=True, slots=True)
class UserArgs:
    """The script keys and arguments fixed by one version of an end user: the key's layout, under
    the user's own hash tag `{u:<record id>}`. In a cluster those keys sit in another slot than
    the key's, which one script cannot reach: the user is admitted by a script of its own, with
    the marker of its own slot."""

    admit_keys: tuple[str, ...]  # rate, spend, windowed spend, reservations, reserved
    admit_limits: tuple[int, ...]  # 1 (a user), then as KeyArgs.admit_limits
    settle_keys: tuple[str, ...]
    settle_window_ms: int
    marker: str  # the spend marker of the user's slot

    def counted(self) -> Counted:
        first = [(self.admit_keys[0], self.admit_limits[2])] if self.admit_limits[1] else []
        return (self.admit_keys[3], self.admit_keys[4]), first

    @classmethod
    def of(cls, user: User, layout: Layout = ONE_REDIS) -> UserArgs:
        base = f"{PREFIX}{{u:{user.record_id}}}:"
        spend = f"{base}spend"
        window_spend = f"{base}wspend:{user.cost_limit_in_usd_unit}"
        cost_window_ms = user.cost_window_seconds * 1000
        settle_keys = (spend, window_spend, f"{base}res", f"{base}resamt")
        return cls(
            (f"{base}rate:{user.rate_limit_unit}", *settle_keys),
            (
                1,
                user.rate_limit_over_time,
                user.rate_window_seconds * 1000,
                to_nano(user.cost_limit_in_usd),
                to_nano(user.cost_limit_in_usd_over_time),
                cost_window_ms,
            ),
            settle_keys,
            cost_window_ms if user.cost_limit_in_usd_over_time else 0,
            layout.marker(spend),
        )
