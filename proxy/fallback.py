"""Limits while Redis is away: each replica enforces a conservative share on its own.

From its last admissions through Redis, a replica knows each key's committed budget. During an
outage it admits a key's calls while its own new spend stays within `share` of what was left, and
at most `share` of the rate limit per window; the charges wait in the settlement queue and reach
Redis when it returns. With N replicas, a share of 1/N keeps the whole fleet within every limit.
A key whose budget the replica never saw, or an outage longer than `max_outage`, is refused with
503; so is everything in `closed` mode.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field

from proxy.errors import limits_unavailable
from shared.limits import Admission, has_cost_limits, rate_windows, to_nano
from shared.models import UNIT_SECONDS, Key, User

RETRY_INTERVAL = 1.0  # while Redis is away, one call a second tries it; the others go local
# A local refusal is provisional (Redis, once back, decides on the whole fleet's figures, and
# spend alone is not known here): it asks for a retry within this, however long the key's window.
LOCAL_RETRY_AFTER = 10.0


@dataclass(slots=True)
class KeyView:
    lifetime_committed: int = -1  # nano-USD, as of the last admission through Redis
    window_committed: int = -1
    local_spend: int = 0  # reserved or charged here since Redis went away
    admitted: collections.deque[float] = field(default_factory=collections.deque)


class LocalLimits:
    def __init__(self, mode: str, share: float, max_outage: float) -> None:
        self.mode = mode
        self.share = share
        self.max_outage = max_outage
        self.down_since: float | None = None
        self._last_try = 0.0
        self._views: dict[str, KeyView] = {}
        # The views' generation, a new one each time Redis comes back: a call admitted locally
        # settles only against the views it was admitted in.
        self._epoch = 0

    def should_try_redis(self) -> bool:
        if self.down_since is None:
            return True
        now = time.monotonic()
        if now - self._last_try >= RETRY_INTERVAL:
            self._last_try = now
            return True
        return False

    def redis_answered(self, key: Key, admission: Admission) -> None:
        if self.down_since is not None:
            self.down_since = None
            self._views.clear()  # Redis has every charge queued meanwhile, or soon will
            self._epoch += 1
        if admission.admitted:
            view = self._views.setdefault(key.key_id, KeyView())
            view.lifetime_committed = admission.lifetime_committed
            view.window_committed = admission.window_committed

    def redis_failed(self) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        self._last_try = now

    def admit(self, key: Key, reservation: int, user: User | None = None) -> Admission:
        """Decide without Redis; raises the 503 where no safe decision can be made."""
        assert self.down_since is not None
        if self.mode == "closed" or time.monotonic() - self.down_since > self.max_outage:
            raise limits_unavailable()
        if user is not None and has_cost_limits(user):
            raise limits_unavailable()  # a user's spend is never seen here: no share to give
        view = self._views.setdefault(key.key_id, KeyView())
        first, extra = rate_windows(key)
        windows = [(limit, UNIT_SECONDS[unit]) for unit, limit in extra.items()]
        if first:
            windows.append((first, key.rate_window_seconds))
        refused = self._rate_refusal(view, windows)
        user_view = None
        if refused is None and user is not None and user.rate_limit_over_time:
            user_view = self._views.setdefault(f"u:{user.record_id}", KeyView())
            user_window = [(user.rate_limit_over_time, user.rate_window_seconds)]
            refused = self._rate_refusal(user_view, user_window, "user_rate")
        if refused is not None:
            return refused
        for limit, committed, reason in (
            (key.cost_limit_in_usd, view.lifetime_committed, "cost_reserved"),
            (key.cost_limit_in_usd_over_time, view.window_committed, "window_reserved"),
        ):
            if not limit:
                continue
            if committed < 0:
                raise limits_unavailable()  # never saw this key's spend: no safe share to give
            allowance = (to_nano(limit) - committed) * self.share
            if view.local_spend + reservation > allowance:
                return Admission(False, reason=reason, retry_after=LOCAL_RETRY_AFTER)
        view.local_spend += reservation
        for counted in (view if windows else None, user_view):
            if counted is not None:
                counted.admitted.append(time.monotonic())
        return Admission(True, local=True, reservation_nano=reservation, local_epoch=self._epoch)

    def settled(self, key: Key, admission: Admission, cost: int) -> None:
        """Replace a local reservation by the call's real cost, in the views it was made in."""
        view = self._views.get(key.key_id)
        if view is not None and admission.local_epoch == self._epoch:
            view.local_spend += cost - admission.reservation_nano

    def _rate_refusal(
        self, view: KeyView, windows: list[tuple[int, int]], reason: str = "rate"
    ) -> Admission | None:
        """Refused when any window (limit, seconds) holds its share of admissions already."""
        if not windows:
            return None
        now = time.monotonic()
        longest = max(seconds for _, seconds in windows)
        admitted = view.admitted
        while admitted and admitted[0] <= now - longest:
            admitted.popleft()
        for limit, seconds in windows:
            inside = [at for at in admitted if at > now - seconds]
            if len(inside) >= max(1, math.floor(limit * self.share)):
                frees = inside[0] + seconds - now
                return Admission(
                    False,
                    reason=reason,
                    rate_limit=limit,
                    rate_window_ms=seconds * 1000,
                    retry_after=min(LOCAL_RETRY_AFTER, frees),
                )
        return None
