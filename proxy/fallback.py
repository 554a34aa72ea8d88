"""Limits while Redis is away: each replica enforces its share of what is left, on its own.

Every replica announces itself in Redis with a short expiry, so each knows how many replicas
share the keys' limits; in an outage each takes 1/(replicas last seen) of what a key had left
(`REDIS_OUTAGE_SHARE`, when set, overrides it), so the fleet stays within every limit. What is
left comes from the replica's last admission of the key through Redis, or, for a key it has not
served since it started, from the spend keymgmt recorded in Postgres (read once per key and
outage, only here, never on the request path while Redis answers). Charges wait in the settlement
queue. While local, a background task tries Redis every second: it applies the queued charges and
writes the rate admissions made locally into Redis's windows, and keeps doing so, still deciding
locally, until Redis has answered for RECOVERY_GRACE, by when every other replica has written its
own; only then is Redis trusted again, so that it grants no window twice. An outage longer than
`max_outage`, a key whose spend neither Redis nor Postgres gave, a replica that has not yet read
the number of replicas (and has no REDIS_OUTAGE_SHARE), and `closed` mode get 503.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.errors import limits_unavailable
from shared.admissions import Admission, LimitsNotReady, has_cost_limits, has_limits
from shared.limit_keys import rate_windows, to_nano
from shared.limits import LimitEngine
from shared.models import UNIT_SECONDS, Key, User

RETRY_INTERVAL = 1.0  # while Redis is away, it is tried this often, off the request path
# Redis answers a replica's write-back this long before the replica trusts it again: long
# enough for every replica (each trying every RETRY_INTERVAL) to have written back its own.
RECOVERY_GRACE = 3 * RETRY_INTERVAL
# A local refusal is provisional (Redis, once back, decides on the whole fleet's figures, and
# spend alone is not known here): it asks for a retry within this, however long the key's window.
LOCAL_RETRY_AFTER = 10.0


@dataclass(frozen=True, slots=True)
class RecordedUsage:
    """A key's usage as Postgres recorded it: lifetime spend, spend in the cost window and calls
    in the rate window (nano-USD, calls)."""

    spend: int
    window_spend: int
    requests: int


RecordedReader = Callable[[Key], Awaitable[RecordedUsage]]


@dataclass(slots=True)
class KeyView:
    lifetime_committed: int = -1  # nano-USD, as of the last admission through Redis
    window_committed: int = -1
    rate_used: int = 0  # calls in the rate window then, this one included
    seen_at: float = 0.0  # monotonic time of that admission
    local_spend: int = 0  # reserved or charged here since Redis went away
    admitted: collections.deque[float] = field(default_factory=collections.deque)


class LocalLimits:
    def __init__(
        self,
        mode: str,
        share: float | None,
        max_outage: float,
        recorded: RecordedReader | None = None,
    ) -> None:
        self.mode = mode
        self.share_override = share
        self.max_outage = max_outage
        # The proxies announced in Redis, as last read there; 0 until first read: a replica
        # started during an outage knows no share that is safe, unless one is configured.
        self.replicas_seen = 0
        self.down_since: float | None = None
        self._answering_since: float | None = None  # in local mode, since Redis took write-backs
        self._views: dict[str, KeyView] = {}
        self.recorded = recorded
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._recorded_failed_at = -math.inf  # calls wait on a failing Postgres once a second
        # Rate admissions made locally, (key, wall-clock ms), not yet written into Redis.
        self._unwritten: list[tuple[Key, int]] = []
        # Applies every charge queued so far (the settler's); awaited before local mode ends.
        self.drain: Callable[[], Awaitable[None]] | None = None
        # The views' generation, a new one each time Redis comes back: a call admitted locally
        # settles only against the views it was admitted in.
        self._epoch = 0

    @property
    def share(self) -> float | None:
        if self.share_override:
            return self.share_override
        return 1 / self.replicas_seen if self.replicas_seen else None

    async def recover(self, engine: LimitEngine) -> None:
        """For the replica's life: while local, write back to Redis every RETRY_INTERVAL, and
        trust it again once it has answered for RECOVERY_GRACE."""
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            if self.down_since is None:
                continue
            try:
                await self._write_back(engine)
            except Exception:  # still away, or back without its data
                self._answering_since = None

    async def _write_back(self, engine: LimitEngine) -> None:
        if self.drain is not None:
            await self.drain()
        while True:
            batch, self._unwritten = self._unwritten, []
            try:
                ready = await engine.record_admissions(batch)
            except BaseException:
                self._unwritten = batch + self._unwritten
                raise
            if not ready:  # lost its data: keymgmt's restore rebuilds the windows from Postgres
                raise LimitsNotReady
            if not self._unwritten:
                break
        # No await since the list was found empty: no local admission is left unwritten.
        now = time.monotonic()
        if self._answering_since is None:
            self._answering_since = now
        elif now - self._answering_since >= RECOVERY_GRACE:
            self.down_since = self._answering_since = None
            self._views.clear()
            self._epoch += 1

    def redis_answered(self, key: Key, admission: Admission) -> None:
        if admission.admitted:
            view = self._views.setdefault(key.key_id, KeyView())
            view.lifetime_committed = admission.lifetime_committed
            view.window_committed = admission.window_committed
            if admission.remaining_requests is not None:
                view.rate_used = key.rate_limit_over_time - admission.remaining_requests
            view.seen_at = time.monotonic()

    def redis_failed(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()

    def unseen(self, key: Key) -> bool:
        """A key with limits this replica holds no figures of: `load_recorded` gives them."""
        return has_limits(key) and key.key_id not in self._views and self.recorded is not None

    async def load_recorded(self, key: Key) -> None:
        """Take a key's figures from Postgres, once however many calls ask at the same time; a
        failure leaves the key unseen (its calls get 503)."""
        loading = self._loading.get(key.key_id)
        if loading is None and time.monotonic() - self._recorded_failed_at < RETRY_INTERVAL:
            raise limits_unavailable()
        if loading is None:
            loading = asyncio.ensure_future(self._read_recorded(key))
            self._loading[key.key_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key.key_id, None))
        try:
            await asyncio.shield(loading)
        except Exception:
            self._recorded_failed_at = time.monotonic()
            raise limits_unavailable() from None

    async def _read_recorded(self, key: Key) -> None:
        assert self.recorded is not None
        usage = await self.recorded(key)
        self._views[key.key_id] = KeyView(
            lifetime_committed=usage.spend if key.cost_limit_in_usd else -1,
            window_committed=usage.window_spend if key.cost_limit_in_usd_over_time else -1,
            rate_used=usage.requests,
            seen_at=time.monotonic(),
        )

    def admit(self, key: Key, reservation: int, user: User | None = None) -> Admission:
        """Decide without Redis; raises the 503 where no safe decision can be made."""
        assert self.down_since is not None
        share = self.share
        if (
            self.mode == "closed"
            or time.monotonic() - self.down_since > self.max_outage
            or share is None
        ):
            raise limits_unavailable()
        if user is not None and has_cost_limits(user):
            raise limits_unavailable()  # a user's spend is never seen here: no share to give
        view = self._views.setdefault(key.key_id, KeyView())
        now = time.monotonic()
        first, extra = rate_windows(key)
        # Calls Redis counted leave the window at the latest one window after they were seen;
        # only the first window's count is known here.
        windows = [(limit, UNIT_SECONDS[unit], 0) for unit, limit in extra.items()]
        if first:
            seconds = key.rate_window_seconds
            windows.append((first, seconds, view.rate_used if now < view.seen_at + seconds else 0))
        refused = _rate_refusal(view, windows, share, "rate")
        user_view = None
        if refused is None and user is not None and user.rate_limit_over_time:
            user_view = self._views.setdefault(f"u:{user.record_id}", KeyView())
            user_window = [(user.rate_limit_over_time, user.rate_window_seconds, 0)]
            refused = _rate_refusal(user_view, user_window, share, "user_rate")
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
            allowance = (to_nano(limit) - committed) * share
            if view.local_spend + reservation > allowance:
                return Admission(False, reason=reason, retry_after=LOCAL_RETRY_AFTER)
        view.local_spend += reservation
        if windows:
            view.admitted.append(now)
            self._unwritten.append((key, int(time.time() * 1000)))
        if user_view is not None:
            user_view.admitted.append(now)
        return Admission(True, local=True, reservation_nano=reservation, local_epoch=self._epoch)

    def settled(self, key: Key, admission: Admission, cost: int) -> None:
        """Replace a local reservation by the call's real cost, in the views it was made in."""
        view = self._views.get(key.key_id)
        if view is not None and admission.local_epoch == self._epoch:
            view.local_spend += cost - admission.reservation_nano


def _rate_refusal(
    view: KeyView, windows: list[tuple[int, int, int]], share: float, reason: str
) -> Admission | None:
    """Refused when a window (limit, seconds, calls Redis counted) holds its share already."""
    if not windows:
        return None
    now = time.monotonic()
    admitted = view.admitted
    longest = max(seconds for _, seconds, _ in windows)
    while admitted and admitted[0] <= now - longest:
        admitted.popleft()
    for limit, seconds, counted in windows:
        inside = [at for at in admitted if at > now - seconds]
        if len(inside) >= math.floor((limit - counted) * share):
            frees = inside[0] + seconds - now if inside else LOCAL_RETRY_AFTER
            return Admission(
                False,
                reason=reason,
                rate_limit=limit,
                rate_window_ms=seconds * 1000,
                retry_after=min(LOCAL_RETRY_AFTER, max(1.0, frees)),
            )
    return None
