"""Stage 2, admit: one Redis script checks every limit of the key and reserves the call's cost.

While Redis is away, or back without its data, the replica decides alone (proxy/fallback.py).
"""

from __future__ import annotations

from proxy.calls import Call
from proxy.costs import most_usd
from proxy.errors import (
    ProxyError,
    budget_reserved,
    budget_spent,
    rate_limited,
    window_budget_spent,
)
from proxy.fallback import LocalLimits
from shared.admissions import Admission, LimitsNotReady, has_cost_limits, has_limits, limited_user
from shared.limit_keys import to_nano
from shared.limits import LimitEngine
from shared.metrics import Counter
from shared.models import UNIT_SECONDS, Key, User
from shared.pricing import Pricing
from shared.redispipe import RedisReplyError


def reservation_nano(call: Call, pricing: Pricing) -> int:
    """The most this call is expected to cost (its prompt counted high, so that a key never
    spends past its limit on it, plus its output cap where given); refused, before anything is
    reserved, when it cannot be priced."""
    user = limited_user(call.user)
    if not has_cost_limits(call.key) and (user is None or not has_cost_limits(user)):
        return 0
    return to_nano(most_usd(call, pricing))


async def decide(
    call: Call, engine: LimitEngine, local: LocalLimits, reservation: int, errors: Counter
) -> Admission:
    if local.down_since is None:  # while local, only the recovery task tries Redis
        try:
            admission = await engine.admit(call.key, reservation, limited_user(call.user))
        except LimitsNotReady:
            local.redis_failed()
        except (RedisReplyError, OSError):  # OSError: connection lost, timed out
            errors.inc(operation="admit")
            local.redis_failed()
        else:
            local.redis_answered(call.key, admission)
            return admission
    if local.unseen(call.key):
        await local.load_recorded(call.key)
    return local.admit(call.key, reservation, limited_user(call.user))


async def admit(
    call: Call, engine: LimitEngine, local: LocalLimits, pricing: Pricing, errors: Counter
) -> None:
    if has_limits(call.key) or limited_user(call.user) is not None:
        await admit_reserving(call, reservation_nano(call, pricing), engine, local, errors)


async def admit_reserving(
    call: Call, reservation: int, engine: LimitEngine, local: LocalLimits, errors: Counter
) -> None:
    """Admit the call holding `reservation` nano-USD (a route sizes it for its dearest step)."""
    admission = await decide(call, engine, local, reservation, errors)
    if admission.admitted:
        call.admission = admission
        return
    raise refusal(call, admission)


UNITS_BY_MS = {seconds * 1000: unit for unit, seconds in UNIT_SECONDS.items()}


def refusal(call: Call, admission: Admission) -> ProxyError:
    """The error of a refused admission, naming the limit (the key's or its user's) that held."""
    retry_after = admission.retry_after or 1
    holder: Key | User = call.key
    reason = admission.reason
    if reason.startswith("user_") and call.user is not None:
        holder, reason = call.user, reason.removeprefix("user_")
    name = "key" if holder is call.key else "user"
    match reason:
        case "rate":
            unit = UNITS_BY_MS.get(admission.rate_window_ms, holder.rate_limit_unit)
            limit = admission.rate_limit or holder.rate_limit_over_time
            return rate_limited(limit, unit, retry_after, name)
        case "window":
            return window_budget_spent(
                holder.cost_limit_in_usd_over_time,
                holder.cost_limit_in_usd_unit,
                retry_after,
                name,
            )
        case "cost_reserved":
            return budget_reserved(holder.cost_limit_in_usd, "", retry_after, name)
        case "window_reserved":
            return budget_reserved(
                holder.cost_limit_in_usd_over_time, holder.cost_limit_in_usd_unit, retry_after, name
            )
        case _:
            return budget_spent(holder.cost_limit_in_usd, name)
