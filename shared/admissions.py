"""What an admission decided, read from the admit script's reply, and who has limits at all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared.models import Key, User


class LimitsNotReady(Exception):
    """Redis came back without its data and keymgmt has not restored the spend yet."""


class Charged(Protocol):
    """Told the charge of each call it admitted (a lease, proxy/lease.py)."""

    def settled(self, admission: Admission, cost_nano: int) -> None: ...


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
    # What a local admission reserved, to release when settled; a lease's call: what it carved.
    reservation_nano: int = 0
    local_epoch: int = 0  # the local limits' view a local admission was made in
    lease: Charged | None = None  # the lease this call was served from, told its charge


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


def parse_admission(reply: list[Any], reservation: str, refused_as: str = "") -> Admission:
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
    reason = refused_as + (reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]))
    wait_ms = int(reply[2])
    limit, window_ms = (int(reply[3]), int(reply[4])) if len(reply) > 4 else (0, 0)
    return Admission(
        False,
        reason=reason,
        rate_limit=limit,
        rate_window_ms=window_ms,
        retry_after=None if wait_ms < 0 else wait_ms / 1000,
    )
