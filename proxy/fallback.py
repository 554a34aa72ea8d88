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
from shared.limits import Admission, to_nano
from shared.models import Key

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

    def admit(self, key: Key, reservation: int) -> Admission:
        """Decide without Redis; raises the 503 where no safe decision can be made."""
        assert self.down_since is not None
        if self.mode == "closed" or time.monotonic() - self.down_since > self.max_outage:
            raise limits_unavailable()
        view = self._views.setdefault(key.key_id, KeyView())
        if key.rate_limit_over_time and not self._rate_allows(key, view):
            frees = view.admitted[0] + key.rate_window_seconds - time.monotonic()
            return Admission(False, reason="rate", retry_after=min(LOCAL_RETRY_AFTER, frees))
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
        if key.rate_limit_over_time:
            view.admitted.append(time.monotonic())
        return Admission(True, local=True, reservation_nano=reservation, local_epoch=self._epoch)

    def settled(self, key: Key, admission: Admission, cost: int) -> None:
        """Replace a local reservation by the call's real cost, in the views it was made in."""
        view = self._views.get(key.key_id)
        if view is not None and admission.local_epoch == self._epoch:
            view.local_spend += cost - admission.reservation_nano

    def _rate_allows(self, key: Key, view: KeyView) -> bool:
        horizon = time.monotonic() - key.rate_window_seconds
        while view.admitted and view.admitted[0] <= horizon:
            view.admitted.popleft()
        return len(view.admitted) < max(1, math.floor(key.rate_limit_over_time * self.share))
