"""Admission from a short local lease, for busy keys whose limits are far from reached.

A lease is counted in Redis when it is taken: the admit script that admits a call also counts L
more calls in every rate window of the key and reserves a budget B with the call's own
reservation, only when all of it fits (shared/lua/admit.lua). The replica then admits up to L
calls of the key without a round trip, each carving its reservation from B. The slots are used
only within the bucket they were counted in, so no window ever holds more than its limit; those
left unused are returned at the lease's end, and B is released through the settler behind the
charge of the last call served from it, so that spend is never counted short.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from shared.admissions import Admission, has_cost_limits, has_limits, parse_admission
from shared.limit_keys import MAX_CALL_NANO, WINDOW_BUCKETS, Counted
from shared.limits import LimitEngine, Settlement
from shared.models import Key, User

MAX_SLOTS = 64
# A key whose calls reach Redis within this long of one another is busy, even one at a time.
BUSY_GAP = 0.05
# Keys whose last trip to Redis is remembered, for BUSY_GAP; past that, all are forgotten.
KEYS_REMEMBERED = 10_000
MAX_SECONDS = 1.0
SAFETY = 0.005  # a lease ends this long before its bucket does, in Redis's clock or ours


# Whose calls a lease serves: a key's without a limited user, or a key's with that user.
Holder = str | tuple[str, str]


def holder_of(key: Key, user: User | None) -> Holder:
    return key.key_id if user is None else (key.key_id, user.record_id)


@dataclass(slots=True, eq=False)
class Lease:
    engine: LeasingEngine
    key: Key  # the versions it was taken for: another one of either drops it
    user: User | None  # the end user whose calls it serves, if one with limits
    counted: Counted  # where its slots were counted: the key's windows and the user's
    at_ms: int  # when (Redis's clock): the bucket they were counted in
    slots: int
    # Nano-USD held in Redis under `reservation`, the asker's own reservation in it; None when
    # neither the key nor the user has cost limits: their calls reserve nothing.
    budget: int | None
    reservation: str
    until: float  # time.monotonic(): a call is served from it before this only
    left: int | None  # requests left in Redis's first window once the lease was counted
    lifetime_committed: int
    window_committed: int
    used: int = 0  # slots taken
    carved: int = 0  # of the budget: reservations of calls in flight, then their costs
    in_flight: int = 1  # the asker's call is served from it too
    ended: bool = False

    def take(self, reservation_nano: int) -> Admission | None:
        if (
            self.ended
            or self.used >= self.slots
            or (self.budget is not None and self.carved + reservation_nano > self.budget)
            or time.monotonic() >= self.until
        ):
            return None
        self.used += 1
        self.carved += reservation_nano
        self.in_flight += 1
        return self.admission(reservation_nano)

    def admission(self, reservation_nano: int) -> Admission:
        return Admission(
            True,
            remaining_requests=None if self.left is None else self.left + self.slots - self.used,
            lifetime_committed=self.lifetime_committed,
            window_committed=self.window_committed,
            reservation_nano=reservation_nano,
            lease=self,
        )

    def settled(self, admission: Admission, cost_nano: int) -> None:
        """A call of the lease charged (its charge queued already): a cost above what it carved
        leaves less for the others; after the last call of an ended lease its budget goes."""
        self.carved += cost_nano - admission.reservation_nano
        self.in_flight -= 1
        if self.ended and self.in_flight == 0:
            self.engine.release_budget(self)


class LeasingEngine(LimitEngine):
    """A LimitEngine that admits the calls of a key holding a valid lease locally."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leases: dict[Holder, Lease] = {}  # a busy holder's current or last lease
        self._admitting: dict[Holder, int] = {}  # admissions of a holder awaiting Redis
        self._asking: set[Holder] = set()  # holders with a lease asked for
        self._last_trip: dict[Holder, float] = {}  # when a holder's call last went to Redis

    async def admit(
        self, key: Key, reservation_nano: int = 0, user: User | None = None
    ) -> Admission:
        holder = holder_of(key, user)
        lease = self._leases.get(holder)
        if lease is not None:
            # Another version of the key or the user (limits edited, say) drops it.
            if (lease.key is not key and lease.key != key) or (
                lease.user is not user and lease.user != user
            ):
                self._end(lease)
                del self._leases[holder]
                lease = None
            else:
                admission = lease.take(reservation_nano)
                if admission is not None:
                    return admission
        # In a cluster a limited user is admitted by a script of its own: never from a lease.
        may_ask = (
            (user is None or not self.layout.cluster)
            and holder not in self._asking
            and (user is not None or has_limits(key))
        )
        if may_ask:
            waiting = self._admitting.get(holder, 0)
            self._admitting[holder] = waiting + 1
        try:
            if may_ask:
                served = lease.used + 1 if lease is not None else 0
                if self._returns_soon(holder) or waiting or served > 1:  # busy
                    slots = 2 * max(served, waiting + 1)
                    return await self._ask(key, user, reservation_nano, slots)
            return await super().admit(key, reservation_nano, user)
        except Exception:
            self.drop_leases()
            raise
        finally:
            if may_ask:
                if self._admitting[holder] > 1:
                    self._admitting[holder] -= 1
                else:
                    del self._admitting[holder]

    def _returns_soon(self, holder: Holder) -> bool:
        """Notes this trip of the holder's to Redis: True when its last one was under BUSY_GAP
        ago."""
        now = time.monotonic()
        last = self._last_trip.get(holder)
        if last is None and len(self._last_trip) >= KEYS_REMEMBERED:
            self._last_trip.clear()
        self._last_trip[holder] = now
        return last is not None and now - last < BUSY_GAP

    async def _ask(
        self, key: Key, user: User | None, reservation_nano: int, slots: int
    ) -> Admission:
        """Admit one call through Redis, asking for a lease of up to `slots` beside it."""
        slots = min(MAX_SLOTS, slots)
        reservation = self._reservation_id(key, reservation_nano, user)
        own = min(max(0, reservation_nano), MAX_CALL_NANO) if reservation else 0
        command = (*self.admit_call(key, reservation_nano, reservation, user), slots, slots * own)
        sent = time.monotonic()
        holder = holder_of(key, user)
        self._asking.add(holder)
        try:
            reply = await self._queued(command, Settlement(key, 0, reservation, user=user))
        finally:
            self._asking.discard(holder)
        admission = parse_admission(reply, reservation)
        granted = int(reply[5]) if admission.admitted else 0
        if not granted:
            return admission
        counted = self._counted(key, user)
        at_ms = int(reply[4])
        seconds = MAX_SECONDS
        if counted[1]:  # used within the bucket of the shortest window they were counted in
            width = min(ms for _, ms in counted[1]) / WINDOW_BUCKETS
            seconds = min(seconds, ((math.floor(at_ms / width) + 1) * width - at_ms) / 1000)
        lease = Lease(
            self,
            key,
            user,
            counted,
            at_ms,
            granted,
            own + int(reply[6])
            if has_cost_limits(key) or (user is not None and has_cost_limits(user))
            else None,
            reservation,
            sent + seconds - SAFETY,
            admission.remaining_requests,
            admission.lifetime_committed,
            admission.window_committed,
            carved=own,
        )
        old = self._leases.get(holder)
        if old is not None:
            self._end(old)
        self._leases[holder] = lease
        delay = max(0.0, lease.until - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._expire, lease)
        return lease.admission(own)

    def _expire(self, lease: Lease) -> None:
        self._end(lease)
        # Kept while the key is busy, for the next lease's size; an idle key's is forgotten.
        holder = holder_of(lease.key, lease.user)
        if lease.used == 0 and self._leases.get(holder) is lease:
            del self._leases[holder]

    def _end(self, lease: Lease) -> None:
        """Serve no more from `lease`: its unused slots go back, its budget once its calls are
        charged."""
        if lease.ended:
            return
        lease.ended = True
        if lease.used < lease.slots:
            self._return_slots(lease.counted, lease.at_ms, lease.slots - lease.used)
        if lease.in_flight == 0:
            self.release_budget(lease)

    def release_budget(self, lease: Lease) -> None:
        if lease.reservation and self.release is not None:
            self.release(Settlement(lease.key, 0, lease.reservation, user=lease.user))

    def drop_leases(self) -> None:
        """Redis failed, or the replica stops: no call is served from a lease any more."""
        for lease in self._leases.values():
            self._end(lease)
        self._leases.clear()

    async def close(self) -> None:
        """On a graceful stop, before the settler drains: budgets released, slots returned."""
        self.drop_leases()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _release_if_admitted(self, release: Settlement, reply: list[Any]) -> None:
        """An asker who left: the budget goes with its reservation, the slots back too."""
        super()._release_if_admitted(release, reply)
        if int(reply[0]) == 1 and len(reply) > 5 and int(reply[5]):
            counted = self._counted(release.key, release.user)
            self._return_slots(counted, int(reply[4]), int(reply[5]))

    def _counted(self, key: Key, user: User | None) -> Counted:
        """Where a call of the key (and its user) is counted: both on this one Redis."""
        reservations, windows = self.key_args(key).counted()
        if user is None:
            return reservations, windows
        return reservations, [*windows, *self.user_args(user).counted()[1]]

    def _return_slots(self, counted: Counted, at_ms: int, calls: int) -> None:
        """Uncount `calls` unused slots in the buckets they were counted in (at `at_ms`)."""
        if counted[1]:
            task = asyncio.create_task(self._take_back(counted, "", at_ms, calls))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
