"""Stage 2, admit: one Redis script checks every limit of the key and reserves the call's cost.

While Redis is away, or back without its data, the replica decides alone (proxy/fallback.py).
"""

from __future__ import annotations

from proxy.calls import Call
from proxy.costs import most_usd
from proxy.errors import budget_reserved, budget_spent, rate_limited, window_budget_spent
from proxy.fallback import LocalLimits
from shared.limits import (
    Admission,
    LimitEngine,
    LimitsNotReady,
    has_cost_limits,
    has_limits,
    to_nano,
)
from shared.metrics import Counter
from shared.pricing import Pricing
from shared.redispipe import RedisReplyError


def reservation_nano(call: Call, pricing: Pricing) -> int:
    """The most this call is expected to cost (its prompt counted high, so that a key never
    spends past its limit on it, plus its output cap where given); refused, before anything is
    reserved, when it cannot be priced."""
    if not has_cost_limits(call.key):
        return 0
    return to_nano(most_usd(call, pricing))


async def decide(
    call: Call, engine: LimitEngine, local: LocalLimits, reservation: int, errors: Counter
) -> Admission:
    if local.should_try_redis():
        try:
            admission = await engine.admit(call.key, reservation)
        except LimitsNotReady:
            local.redis_failed()
        except (RedisReplyError, OSError):  # OSError: connection lost, timed out
            errors.inc(operation="admit")
            local.redis_failed()
        else:
            local.redis_answered(call.key, admission)
            return admission
    return local.admit(call.key, reservation)


async def admit(
    call: Call, engine: LimitEngine, local: LocalLimits, pricing: Pricing, errors: Counter
) -> None:
    if has_limits(call.key):
        await admit_reserving(call, reservation_nano(call, pricing), engine, local, errors)


async def admit_reserving(
    call: Call, reservation: int, engine: LimitEngine, local: LocalLimits, errors: Counter
) -> None:
    """Admit the call holding `reservation` nano-USD (a route sizes it for its dearest step)."""
    key = call.key
    admission = await decide(call, engine, local, reservation, errors)
    if admission.admitted:
        call.admission = admission
        return
    retry_after = admission.retry_after or 1
    match admission.reason:
        case "rate":
            raise rate_limited(key.rate_limit_over_time, key.rate_limit_unit, retry_after)
        case "window":
            raise window_budget_spent(
                key.cost_limit_in_usd_over_time, key.cost_limit_in_usd_unit, retry_after
            )
        case "cost_reserved":
            raise budget_reserved(key.cost_limit_in_usd, "", retry_after)
        case "window_reserved":
            raise budget_reserved(
                key.cost_limit_in_usd_over_time, key.cost_limit_in_usd_unit, retry_after
            )
        case _:
            raise budget_spent(key.cost_limit_in_usd)
