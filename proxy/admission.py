"""Stage 2, admit: one Redis script checks every limit of the key and reserves the call's cost."""

from __future__ import annotations

from redis.exceptions import RedisError

from proxy.calls import Call
from proxy.errors import budget_spent, limits_unavailable, rate_limited, window_budget_spent
from shared.limits import LimitEngine, has_cost_limits, has_limits, to_nano
from shared.metrics import Counter
from shared.pricing import Pricing


def reservation_nano(call: Call, pricing: Pricing) -> int:
    """The most this call is expected to cost: its prompt, plus its output cap where given."""
    if not call.metered or not has_cost_limits(call.key):
        return 0
    rates = pricing.rates(call.model)
    if rates is None:
        return 0
    prompt_cost = call.prompt_tokens_estimate() * rates.input
    return to_nano(prompt_cost + call.max_output_tokens() * rates.output)


async def admit(call: Call, engine: LimitEngine, pricing: Pricing, errors: Counter) -> None:
    key = call.key
    if not has_limits(key):
        return
    try:
        admission = await engine.admit(key, reservation_nano(call, pricing))
    except (RedisError, OSError, TimeoutError):
        errors.inc(operation="admit")
        raise limits_unavailable() from None
    if admission.admitted:
        call.admission = admission
    elif admission.reason == "rate":
        raise rate_limited(
            key.rate_limit_over_time, key.rate_limit_unit, admission.retry_after or 1
        )
    elif admission.reason == "window":
        raise window_budget_spent(
            key.cost_limit_in_usd_over_time, key.cost_limit_in_usd_unit, admission.retry_after or 1
        )
    else:
        raise budget_spent(key.cost_limit_in_usd)
