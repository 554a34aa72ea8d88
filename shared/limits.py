"""The limit engine: admit and settle, each one atomic Lua script over Redis.

Amounts are integers in nano-USD, so that Redis adds them exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from shared.models import Key
from shared.redispipe import Command, NoScriptError, RedisPipe

PREFIX = "gw:"
NANO_PER_USD = 1_000_000_000
# Usage events wait here for keymgmt to write them to Postgres. Trimmed (approximately) past this
# length, so a keymgmt outage of about this many calls loses no event; a longer one loses the
# oldest events, never spend, which the counters hold.
EVENTS_STREAM = f"{PREFIX}events"
EVENTS_MAX_LENGTH = 1_000_000
EVENT_FIELD = "event"  # an entry's one field: the event as a JSON object
# How long Redis remembers that a settle batch was applied: a batch whose reply was lost and that
# is sent again within this time is not applied twice.
SETTLED_MARKER_MS = 15 * 60 * 1000


def to_nano(usd: float) -> int:
    return round(usd * NANO_PER_USD)


def to_usd(nano: int | float) -> float:
    return nano / NANO_PER_USD


# Present while Redis holds the spend it has been given; gone when Redis lost its data.
SPEND_MARKER = f"{PREFIX}spend-epoch"


def spend_key(key_id: str) -> str:
    return f"{PREFIX}{{{key_id}}}:spend"


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> Script:
        source = resources.files("shared").joinpath("lua", name).read_text()
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

    def call(self, keys: Sequence[str], args: Sequence[int | str | bytes]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


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
            rate=f"{base}rate:{key.rate_limit_unit}",
            spend=spend_key(key.key_id),
            window_spend=f"{base}wspend:{key.cost_limit_in_usd_unit}",
            reservations=f"{base}res",
            reserved=f"{base}resamt",
        )


@dataclass(frozen=True, slots=True)
class KeyArgs:
    """The script keys and arguments fixed by one version of a gateway key."""

    admit_keys: tuple[str, ...]
    # Rate limit, rate window ms, lifetime and windowed cost limits (nano-USD), cost window ms.
    admit_limits: tuple[int, ...]
    settle_keys: tuple[str, ...]
    settle_window_ms: int  # 0 when the key has no windowed cost limit

    @classmethod
    def of(cls, key: Key) -> KeyArgs:
        names = KeyNames.of(key)
        cost_window_ms = key.cost_window_seconds * 1000
        return cls(
            (
                names.rate,
                names.spend,
                names.window_spend,
                names.reservations,
                names.reserved,
                SPEND_MARKER,
            ),
            (
                key.rate_limit_over_time,
                key.rate_window_seconds * 1000,
                to_nano(key.cost_limit_in_usd),
                to_nano(key.cost_limit_in_usd_over_time),
                cost_window_ms,
            ),
            (names.spend, names.window_spend, names.reservations, names.reserved),
            cost_window_ms if key.cost_limit_in_usd_over_time else 0,
        )


# Keys whose script arguments are kept; past this the cache starts again.
KEY_ARGS_CACHED = 65_536


class LimitsNotReady(Exception):
    """Redis came back without its data and keymgmt has not restored the spend yet."""


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str = ""  # "rate", "cost" (lifetime) or "window" when refused
    retry_after: float | None = None  # seconds, for "rate" and "window"
    remaining_requests: int | None = None  # in the rate window, when the key has a rate limit
    reservation: str = ""
    # Budget committed (spend + reservations) after this admission, nano-USD; -1: no such limit.
    lifetime_committed: int = -1
    window_committed: int = -1
    local: bool = False  # decided by this replica alone, while Redis was away
    reservation_nano: int = 0  # what a local admission reserved, to release when settled


@dataclass(frozen=True, slots=True)
class Settlement:
    key: Key
    cost_nano: int
    reservation: str = ""
    # The call's usage event for EVENTS_STREAM, as JSON.
    event: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    cost_usd: float
    cost_usd_in_window: float
    requests_in_window: int


def has_limits(key: Key) -> bool:
    return bool(
        key.rate_limit_over_time or key.cost_limit_in_usd or key.cost_limit_in_usd_over_time
    )


def has_cost_limits(key: Key) -> bool:
    return bool(key.cost_limit_in_usd or key.cost_limit_in_usd_over_time)


# The script call of one admission, and the future its caller awaits.
_Waiting = tuple[Command, "asyncio.Future[Any]"]


class LimitEngine:
    def __init__(self, redis: RedisPipe, reservation_lifetime: float) -> None:
        self.redis = redis
        self._reservation_ms = max(1000, int(reservation_lifetime * 1000))
        self._admit = Script.named("admit.lua")
        self._key_args: dict[str, tuple[Key, KeyArgs]] = {}
        self._waiting: list[_Waiting] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._settle = Script.named("settle.lua")
        self._usage = Script.named("usage.lua")

    def key_args(self, key: Key) -> KeyArgs:
        """Built once per version of the key: the snapshot replaces a Key object that changed."""
        cached = self._key_args.get(key.key_id)
        if cached is not None and cached[0] is key:
            return cached[1]
        if len(self._key_args) >= KEY_ARGS_CACHED:
            self._key_args.clear()
        args = KeyArgs.of(key)
        self._key_args[key.key_id] = (key, args)
        return args

    def admit_call(self, key: Key, reservation_nano: int) -> tuple[Command, str]:
        """The admit script call for one request, and its reservation id."""
        args = self.key_args(key)
        reservation = os.urandom(8).hex() if has_cost_limits(key) else ""
        command: Command = (
            "EVALSHA",
            self._admit.sha,
            len(args.admit_keys),
            *args.admit_keys,
            *args.admit_limits,
            max(0, reservation_nano),
            reservation,
            self._reservation_ms,
        )
        return command, reservation

    async def admit(self, key: Key, reservation_nano: int = 0) -> Admission:
        """Admit one call. Calls that arrive in the same event-loop turn share one round trip."""
        command, reservation = self.admit_call(key, reservation_nano)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, waiter))
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._send_waiting)
        return parse_admission(await waiter, reservation)

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._admit_batch(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _admit_batch(self, batch: list[_Waiting]) -> None:
        try:
            # Every command is the same script: on NOSCRIPT none of them ran.
            replies = await self._execute(self._admit, [command for command, _ in batch])
        except BaseException as error:  # every waiter learns that Redis failed it
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, waiter), reply in zip(batch, replies, strict=True):
            if not waiter.done():
                waiter.set_result(reply)

    async def _execute(self, script: Script, commands: list[Command]) -> list[Any]:
        try:
            return await self.redis.execute(commands)
        except NoScriptError:
            # Redis lost its scripts (a restart): load the script and send the batch again.
            await self.redis.execute([("SCRIPT", "LOAD", script.source)])
            return await self.redis.execute(commands)

    async def settle(self, settlements: list[Settlement], batch_id: str) -> None:
        """Settle a batch, events included, in one script call: no other command runs between.

        A batch id is applied once (within SETTLED_MARKER_MS), so that a batch whose reply was lost
        can be sent again."""
        keys: list[str] = [EVENTS_STREAM, f"{PREFIX}settled:{batch_id}"]
        events = [s.event for s in settlements if s.event is not None]
        args: list[int | str | bytes] = [
            EVENTS_MAX_LENGTH, EVENT_FIELD, SETTLED_MARKER_MS, len(events), *events
        ]  # fmt: skip
        for settlement in settlements:
            if settlement.cost_nano or settlement.reservation:
                key_args = self.key_args(settlement.key)
                keys += key_args.settle_keys
                args += [settlement.cost_nano, key_args.settle_window_ms, settlement.reservation]
        await self._execute(self._settle, [self._settle.call(keys, args)])

    async def usage(self, key: Key) -> KeyUsage:
        names = KeyNames.of(key)
        command = self._usage.call(
            (names.spend, names.window_spend, names.rate),
            (key.cost_window_seconds * 1000, key.rate_window_seconds * 1000),
        )
        [(spend, window_spend, requests)] = await self._execute(self._usage, [command])
        return KeyUsage(to_usd(int(spend)), to_usd(int(window_spend)), int(requests))


def parse_admission(reply: list[Any], reservation: str) -> Admission:
    outcome = int(reply[0])
    if outcome == 2:
        raise LimitsNotReady
    if outcome == 1:
        remaining, lifetime, window = (int(value) for value in reply[1:4])
        return Admission(
            True,
            remaining_requests=None if remaining < 0 else remaining,
            reservation=reservation,
            lifetime_committed=lifetime,
            window_committed=window,
        )
    reason = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    wait_ms = int(reply[2])
    return Admission(False, reason=reason, retry_after=None if wait_ms < 0 else wait_ms / 1000)
