"""The limit engine: admit and settle, each one atomic Lua script over Redis.

Amounts are integers in nano-USD, so that Redis adds them exactly.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.limit_keys import (
    EVENT_FIELD,
    EVENTS_MAX_LENGTH,
    EVENTS_STREAM,
    MAX_CALL_NANO,
    NO_USER,
    REPLICAS,
    SETTLE_SEQUENCE_TTL_MS,
    SPEND_MARKER,
    WINDOW_BUCKETS,
    KeyArgs,
    KeyNames,
    Script,
    UserArgs,
    rate_key,
    rate_windows,
    settle_sequence_key,
    to_usd,
)
from shared.models import UNIT_SECONDS, Key, User
from shared.redispipe import Command, NoScriptError, RedisPipe, RedisReplyError, reply_error

# Keys whose script arguments are kept; past this the cache starts again.
KEY_ARGS_CACHED = 65_536


class NotReplicated(ConnectionError):
    """Fewer replicas than asked for acknowledged a settle batch: it is sent again, under its
    number, so that it is counted once whether or not it survives a failover."""


class LimitsNotReady(Exception):
    """Redis came back without its data and keymgmt has not restored the spend yet."""


class UnusableSettlement(Exception):
    """Redis holds data that settlement `index` of a batch cannot be applied to (a key of another
    type): nothing of the batch was applied; without that settlement it can be."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    # When refused: "rate"; "cost" or "window" when spend alone reached the lifetime or windowed
    # limit; "cost_reserved" or "window_reserved" when calls in flight hold the rest of it.
    reason: str = ""
    # For "rate" and "user_rate": the window that refused, its limit and length (ms).
    rate_limit: int = 0
    rate_window_ms: int = 0
    retry_after: float | None = None  # seconds; None for "cost", which is final
    remaining_requests: int | None = None  # in the rate window, when the key has a rate limit
    reservation: str = ""
    # Budget committed (spend + reservations) after this admission, nano-USD; -1: no such limit.
    lifetime_committed: int = -1
    window_committed: int = -1
    local: bool = False  # decided by this replica alone, while Redis was away
    reservation_nano: int = 0  # what a local admission reserved, to release when settled
    local_epoch: int = 0  # the local limits' view a local admission was made in


@dataclass(frozen=True, slots=True)
class Settlement:
    key: Key
    cost_nano: int
    reservation: str = ""
    # The call's usage event for EVENTS_STREAM, as JSON.
    event: bytes | None = None
    user: User | None = None  # charged too, and its reservation released, when it has limits


@dataclass(frozen=True, slots=True)
class KeyUsage:
    cost_usd: float
    cost_usd_in_window: float
    requests_in_window: int


def has_limits(holder: Key | User) -> bool:
    return bool(
        holder.rate_limit_over_time
        or holder.cost_limit_in_usd
        or holder.cost_limit_in_usd_over_time
        or (isinstance(holder, Key) and holder.rate_limits)
    )


def has_cost_limits(holder: Key | User) -> bool:
    return bool(holder.cost_limit_in_usd or holder.cost_limit_in_usd_over_time)


def limited_user(user: User | None) -> User | None:
    """The user when it has limits of its own: a user without any costs the script nothing."""
    return user if user is not None and has_limits(user) else None


# The script call of one admission, the future its caller awaits, and the release (key, user and
# reservation id) to make should the caller give up waiting.
_Waiting = tuple[Command, "asyncio.Future[Any]", "Settlement"]


class LimitEngine:
    def __init__(
        self,
        redis: RedisPipe,
        reservation_lifetime: float,
        wait_replicas: int = 0,
        wait_ms: int = 500,
    ) -> None:
        self.redis = redis
        self._wait = ("WAIT", wait_replicas, wait_ms) if wait_replicas else None
        self._reservation_ms = max(1000, int(reservation_lifetime * 1000))
        self._admit = Script.named("admit.lua")
        self._key_args: dict[str, tuple[Key, KeyArgs]] = {}
        self._user_args: dict[str, tuple[User, UserArgs]] = {}
        self._waiting: list[_Waiting] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._settle = Script.named("settle.lua")
        self._usage = Script.named("usage.lua")
        self._record = Script.named("record.lua")
        # Takes the release of a reservation whose caller left before learning it was admitted.
        self.release: Callable[[Settlement], None] | None = None

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

    def user_args(self, user: User) -> UserArgs:
        cached = self._user_args.get(user.record_id)
        if cached is not None and cached[0] is user:
            return cached[1]
        if len(self._user_args) >= KEY_ARGS_CACHED:
            self._user_args.clear()
        args = UserArgs.of(user)
        self._user_args[user.record_id] = (user, args)
        return args

    def admit_call(
        self, key: Key, reservation_nano: int, user: User | None = None
    ) -> tuple[Command, str]:
        """The admit script call for one request, and its reservation id. `user` has limits."""
        args = self.key_args(key)
        user_args = self.user_args(user) if user is not None else None
        reserves = reservation_nano > 0 and (
            has_cost_limits(key) or (user is not None and has_cost_limits(user))
        )
        reservation = os.urandom(8).hex() if reserves else ""
        command: Command = (
            "EVALSHA",
            self._admit.sha,
            len(args.admit_keys) + len(args.extra_keys) + (5 if user_args else 0),
            *args.admit_keys,
            *args.extra_keys,
            *(user_args.admit_keys if user_args else ()),
            *args.admit_limits,
            min(max(0, reservation_nano), MAX_CALL_NANO),
            reservation,
            self._reservation_ms,
            *args.extra_args,
            *(user_args.admit_limits if user_args else NO_USER),
        )
        return command, reservation

    async def admit(
        self, key: Key, reservation_nano: int = 0, user: User | None = None
    ) -> Admission:
        """Admit one call. Calls that arrive in the same event-loop turn share one round trip."""
        command, reservation = self.admit_call(key, reservation_nano, user)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        release = Settlement(key, 0, reservation, user=user)
        self._waiting.append((command, waiter, release))
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        try:
            reply = await waiter
        except asyncio.CancelledError:
            # Cancelled after its reply came: _admit_batch saw a waiter with a result.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_if_admitted(release, waiter.result())
            raise
        return parse_admission(reply, reservation)

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._admit_batch(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _admit_batch(self, batch: list[_Waiting]) -> None:
        batch = [waiting for waiting in batch if not waiting[1].cancelled()]  # callers who left
        if not batch:
            return
        try:
            replies = await self._run(self._admit, [command for command, *_ in batch])
        except BaseException as error:  # every waiter learns that Redis failed it
            for _, waiter, release in batch:
                if not waiter.done():
                    waiter.set_exception(error)
                # Redis may have run the script all the same (a reply that timed out): what it
                # reserved is released once Redis answers again, rather than lapsing.
                if release.reservation and self.release is not None:
                    self.release(release)
            if not isinstance(error, Exception):
                raise
            return
        for (_, waiter, release), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                if not waiter.done():
                    waiter.set_exception(reply)
            elif waiter.cancelled():  # its caller left: what the script reserved is released
                self._release_if_admitted(release, reply)
            elif not waiter.done():
                waiter.set_result(reply)

    def _release_if_admitted(self, release: Settlement, reply: list[Any]) -> None:
        if release.reservation and int(reply[0]) == 1 and self.release is not None:
            self.release(release)

    async def _run(self, script: Script, commands: list[Command]) -> list[Any]:
        """The replies of calls of `script`, each error in its place as an exception. A call Redis
        answered NOSCRIPT (it restarted or was flushed) did not run: it is sent again, after
        loading the script, in one more round trip; a call that ran is never sent twice."""
        replies = await self.redis.replies(commands)
        failed = [i for i, reply in enumerate(replies) if isinstance(reply, RedisReplyError)]
        if not failed:
            return replies
        for i in failed:
            replies[i] = reply_error(replies[i])
        lost = [i for i in failed if isinstance(replies[i], NoScriptError)]
        if not lost:
            return replies
        load: Command = ("SCRIPT", "LOAD", script.source)
        try:
            loaded, *again = await self.redis.replies([load, *(commands[i] for i in lost)])
        except Exception as error:  # the calls that ran keep their replies
            again = [error] * len(lost)
        else:
            unloaded = reply_error(loaded)
            again = [unloaded or reply_error(reply) or reply for reply in again]
        for i, reply in zip(lost, again, strict=True):
            replies[i] = reply
        return replies

    async def _run_one(self, script: Script, command: Command) -> Any:
        [reply] = await self._run(script, [command])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def settle(self, settlements: list[Settlement], replica: str, number: int) -> None:
        """Settle a batch, events included, in one script call: no other command runs between.

        `number` numbers the replica's batches, from 1 up: Redis applies a batch only if its
        number is above the last one it applied from `replica`, so a batch whose reply was lost
        can be sent again. A batch is applied whole or not at all."""
        keys: list[str] = [EVENTS_STREAM, settle_sequence_key(replica)]
        events = [s.event for s in settlements if s.event is not None]
        args: list[int | str | bytes] = [
            EVENTS_MAX_LENGTH, EVENT_FIELD, number, SETTLE_SEQUENCE_TTL_MS, len(events), *events
        ]  # fmt: skip
        charged: list[int] = []  # the settlements the script gets keys for, by their index
        for index, settlement in enumerate(settlements):
            if settlement.cost_nano or settlement.reservation:
                charged.append(index)
                key_args = self.key_args(settlement.key)
                keys += key_args.settle_keys
                cost = min(settlement.cost_nano, MAX_CALL_NANO)
                args += [cost, key_args.settle_window_ms, settlement.reservation]
                if settlement.user is not None:  # charged alike, as one more call of the batch
                    charged.append(index)
                    user_args = self.user_args(settlement.user)
                    keys += user_args.settle_keys
                    args += [cost, user_args.settle_window_ms, settlement.reservation]
        reply = await self._run_one(self._settle, self._settle.call(keys, args))
        if isinstance(reply, list):  # {-2, call, why}
            raise UnusableSettlement(charged[int(reply[1])], reply[2].decode())
        if self._wait is not None:
            # WAIT covers this connection's writes up to it; a batch applied already (-1) still
            # writes (its number's expiry), and replicas apply writes in order.
            [replicas] = await self.redis.execute([self._wait])
            if replicas < self._wait[1]:
                raise NotReplicated(
                    f"a settle batch reached {replicas} of {self._wait[1]} replicas"
                )

    async def record_admissions(self, admissions: list[tuple[Key, int]]) -> bool:
        """Count calls admitted without Redis, (key, wall-clock ms) each, in the keys' rate
        windows, in the buckets of their times; False, writing nothing, while Redis has lost its
        data. Sent again after a lost reply, a call counts twice: a window too full for a while,
        never one granted twice."""
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
        args: list[int | str | bytes] = []
        for name, buckets in counts.items():
            args += [windows[name] + math.ceil(windows[name] / WINDOW_BUCKETS), len(buckets)]
            for bucket, n in buckets.items():
                args += [bucket, n]
        command = self._record.call([SPEND_MARKER, *counts], args)
        return bool(await self._run_one(self._record, command))

    async def usage(self, holder: Key | User) -> KeyUsage:
        if isinstance(holder, Key):
            names = KeyNames.of(holder)
            keys = (names.spend, names.window_spend, names.rate)
        else:
            rate, spend, window_spend, *_ = UserArgs.of(holder).admit_keys
            keys = (spend, window_spend, rate)
        command = self._usage.call(
            keys, (holder.cost_window_seconds * 1000, holder.rate_window_seconds * 1000)
        )
        spend, window_spend, requests = await self._run_one(self._usage, command)
        return KeyUsage(to_usd(int(spend)), to_usd(int(window_spend)), int(requests))


async def announce(redis: RedisPipe, replica: str, ttl_ms: int) -> int:
    """Announce `replica` for `ttl_ms`; the number of replicas announced now."""
    now = int(time.time() * 1000)
    _, _, replicas = await redis.execute(
        [
            ("ZREMRANGEBYSCORE", REPLICAS, "-inf", now),
            ("ZADD", REPLICAS, now + ttl_ms, replica),
            ("ZCARD", REPLICAS),
        ]
    )
    return int(replicas)


async def withdraw(redis: RedisPipe, replica: str) -> None:
    await redis.execute([("ZREM", REPLICAS, replica)])


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
    limit, window_ms = (int(reply[3]), int(reply[4])) if len(reply) > 4 else (0, 0)
    return Admission(
        False,
        reason=reason,
        rate_limit=limit,
        rate_window_ms=window_ms,
        retry_after=None if wait_ms < 0 else wait_ms / 1000,
    )
