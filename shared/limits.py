"""The limit engine: admit and settle, each one atomic Lua script over Redis.

Amounts are integers in nano-USD, so that Redis adds them exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.admissions import Admission, has_cost_limits, parse_admission
from shared.limit_batches import record_calls, settle_parts
from shared.limit_keys import (
    MAX_CALL_NANO,
    NO_EXTRA_WINDOWS,
    NO_USER,
    ONE_REDIS,
    REPLICAS,
    Counted,
    KeyArgs,
    KeyNames,
    Layout,
    Script,
    UserArgs,
    to_usd,
)
from shared.models import Key, User
from shared.redispipe import Command, NoScriptError, Pipe, RedisReplyError, reply_error

# Keys whose script arguments are kept; past this the cache starts again.
KEY_ARGS_CACHED = 65_536


class NotReplicated(ConnectionError):
    """Fewer replicas than asked for acknowledged a settle batch: it is sent again, under its
    number, so that it is counted once whether or not it survives a failover."""


class UnusableSettlement(Exception):
    """Redis holds data that settlement `index` of a batch cannot be applied to (a key of another
    type): nothing of the batch was applied; without that settlement it can be."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


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


# The script call of one admission, the future its caller awaits, and the release (key, user and
# reservation id) to make should the caller give up waiting.
_Waiting = tuple[Command, "asyncio.Future[Any]", "Settlement"]


class LimitEngine:
    def __init__(
        self,
        redis: Pipe,
        reservation_lifetime: float,
        wait_replicas: int = 0,
        wait_ms: int = 500,
        layout: Layout = ONE_REDIS,
    ) -> None:
        self.redis = redis
        self.layout = layout
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
        self._unadmit = Script.named("unadmit.lua")
        # Takes the release of a reservation whose caller left before learning it was admitted.
        self.release: Callable[[Settlement], None] | None = None

    def key_args(self, key: Key) -> KeyArgs:
        """Built once per version of the key: the snapshot replaces a Key object that changed."""
        cached = self._key_args.get(key.key_id)
        if cached is not None and cached[0] is key:
            return cached[1]
        if len(self._key_args) >= KEY_ARGS_CACHED:
            self._key_args.clear()
        args = KeyArgs.of(key, self.layout)
        self._key_args[key.key_id] = (key, args)
        return args

    def user_args(self, user: User) -> UserArgs:
        cached = self._user_args.get(user.record_id)
        if cached is not None and cached[0] is user:
            return cached[1]
        if len(self._user_args) >= KEY_ARGS_CACHED:
            self._user_args.clear()
        args = UserArgs.of(user, self.layout)
        self._user_args[user.record_id] = (user, args)
        return args

    def admit_call(
        self, key: Key, reservation_nano: int, reservation: str, user: User | None = None
    ) -> Command:
        """The admit script call for one request. `user` has limits."""
        args = self.key_args(key)
        user_args = self.user_args(user) if user is not None else None
        return (
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

    @staticmethod
    def _reservation_id(key: Key, reservation_nano: int, user: User | None) -> str:
        reserves = reservation_nano > 0 and (
            has_cost_limits(key) or (user is not None and has_cost_limits(user))
        )
        return os.urandom(8).hex() if reserves else ""

    def user_admit_call(self, user: User, reservation_nano: int, reservation: str) -> Command:
        """The admit script call for the user alone, as if it were a key: in a cluster the user's
        counters are in a slot of their own."""
        args = self.user_args(user)
        return (
            "EVALSHA",
            self._admit.sha,
            len(args.admit_keys) + 1,
            *args.admit_keys,
            args.marker,
            *args.admit_limits[1:],
            min(max(0, reservation_nano), MAX_CALL_NANO),
            reservation,
            self._reservation_ms,
            *NO_EXTRA_WINDOWS,
            *NO_USER,
        )

    async def admit(
        self, key: Key, reservation_nano: int = 0, user: User | None = None
    ) -> Admission:
        """Admit one call. Calls that arrive in the same event-loop turn share one round trip."""
        reservation = self._reservation_id(key, reservation_nano, user)
        if user is not None and self.layout.cluster:
            return await self._admit_apart(key, reservation_nano, reservation, user)
        command = self.admit_call(key, reservation_nano, reservation, user)
        reply = await self._queued(command, Settlement(key, 0, reservation, user=user))
        return parse_admission(reply, reservation)

    async def _admit_apart(
        self, key: Key, reservation_nano: int, reservation: str, user: User
    ) -> Admission:
        """A key and its user admitted by one script each, in the same round trip. Should one
        refuse what the other admitted, that admission is taken back, so that neither counts a
        call that was not served; until then it may refuse a concurrent call, never admit one
        too many."""
        replies: tuple[Any, Any] = await asyncio.gather(
            self._queued(
                self.admit_call(key, reservation_nano, reservation), Settlement(key, 0, reservation)
            ),
            self._queued(
                self.user_admit_call(user, reservation_nano, reservation),
                Settlement(key, 0, reservation, user=user),
            ),
            return_exceptions=True,
        )
        key_reply, user_reply = replies
        key_admitted, user_admitted = (
            not isinstance(reply, BaseException) and int(reply[0]) == 1
            for reply in (key_reply, user_reply)
        )
        if key_admitted and user_admitted:
            return parse_admission(key_reply, reservation)
        if key_admitted:
            await self._take_back(self.key_args(key).counted(), reservation, key_reply[4])
        if user_admitted:
            await self._take_back(self.user_args(user).counted(), reservation, user_reply[4])
        for reply in (key_reply, user_reply):
            if isinstance(reply, BaseException):
                raise reply
        if not key_admitted:
            return parse_admission(key_reply, reservation)  # not ready, or the key's refusal
        return parse_admission(user_reply, reservation, refused_as="user_")

    async def _take_back(
        self, counted: Counted, reservation: str, at_ms: int, calls: int = 1
    ) -> None:
        (reservations, reserved), windows = counted
        command = self._unadmit.call(
            [reservations, reserved, *(name for name, _ in windows)],
            [reservation, at_ms, *(ms for _, ms in windows), calls],
        )
        # Should Redis fail it, the reservation lapses and the windows count `calls` more for a
        # while: a limit never loosened.
        with contextlib.suppress(Exception):
            await self._run_one(self._unadmit, command)

    async def _queued(self, command: Command, release: Settlement) -> Any:
        """The reply of `command`, sent with the other admissions of this event-loop turn."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((command, waiter, release))
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after its reply came: _admit_batch saw a waiter with a result.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_if_admitted(release, waiter.result())
            raise

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
        try:
            loaded, *again = await self.redis.replies([script.load, *(commands[i] for i in lost)])
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
        """Settle a batch, events included, in one script call per slot it touches (one call on
        one Redis): no other command runs between.

        `number` numbers the replica's batches, from 1 up: Redis applies a batch (in a cluster,
        each slot's part) only if its number is above the last one it applied from `replica`,
        so a batch whose reply was lost, or that was applied in some slots only, can be sent
        again. A part is applied whole or not at all."""
        parts = settle_parts(settlements, replica, self.layout, self.key_args, self.user_args)
        replies = await self._run(self._settle, [p.command(self._settle, number) for p in parts])
        for part, reply in zip(parts, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if isinstance(reply, list):  # {-2, call, why}
                raise UnusableSettlement(part.charged[int(reply[1])], reply[2].decode())
        if self._wait is not None:
            # WAIT covers the writes sent before it on its connection, which in a cluster is the
            # one of the node a command on the part's slot goes to; a batch applied already (-1)
            # still writes (its number's expiry), and replicas apply writes in order.
            asks: list[Command] = []
            for part in parts:
                asks += [("EXISTS", part.sequence), self._wait]
            acknowledged = (await self.redis.execute(asks))[1::2]
            if min(acknowledged) < self._wait[1]:
                raise NotReplicated(
                    f"a settle batch reached {min(acknowledged)} of {self._wait[1]} replicas"
                )

    async def record_admissions(self, admissions: list[tuple[Key, int]]) -> bool:
        """Count calls admitted without Redis, (key, wall-clock ms) each, in the keys' rate
        windows, in the buckets of their times; False while Redis (in a cluster: a slot of these
        keys) has lost its data, whose windows keymgmt rebuilds from Postgres, writing nothing
        there. Sent again after a lost reply, a call counts twice: a window too full for a
        while, never one granted twice."""
        replies = await self._run(self._record, record_calls(admissions, self.layout, self._record))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return all(replies)

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


async def announce(redis: Pipe, replica: str, ttl_ms: int) -> int:
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


async def withdraw(redis: Pipe, replica: str) -> None:
    await redis.execute([("ZREM", REPLICAS, replica)])
