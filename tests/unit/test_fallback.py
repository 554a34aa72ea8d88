"""Local limits while Redis is away: the shares, the reasons and the Retry-After they give."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import ProxyError
from proxy.fallback import LocalLimits, RecordedUsage
from shared.admissions import Admission
from shared.limit_keys import to_nano
from shared.models import Key, User


def make_key(**limits: object) -> Key:
    return Key(key_id="k", name="k", key_hash="h", created_at=0, updated_at=0, **limits)  # type: ignore[arg-type]


def outage(key: Key, lifetime: int = -1, window: int = -1) -> LocalLimits:
    """Local limits that last saw `key` committed so far through Redis, now in an outage."""
    local = LocalLimits("local", share=0.5, max_outage=300)
    local.redis_answered(key, Admission(True, lifetime_committed=lifetime, window_committed=window))
    local.redis_failed()
    return local


def test_a_window_refusal_is_reported_as_window_when_both_limits_are_equal() -> None:
    key = make_key(
        cost_limit_in_usd=1.0, cost_limit_in_usd_over_time=1.0, cost_limit_in_usd_unit="h"
    )
    local = outage(key, lifetime=0, window=to_nano(0.9))
    refused = local.admit(key, to_nano(0.1))
    assert (refused.admitted, refused.reason) == (False, "window_reserved")
    assert refused.retry_after is not None and refused.retry_after <= 60


def test_a_local_rate_refusal_for_a_daily_limit_retries_within_a_minute() -> None:
    key = make_key(rate_limit_over_time=2, rate_limit_unit="d")
    local = outage(key)
    assert local.admit(key, 0).admitted
    refused = local.admit(key, 0)
    assert (refused.admitted, refused.reason) == (False, "rate")
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 60


def test_a_call_admitted_in_an_earlier_outage_gives_no_allowance_to_the_next() -> None:
    key = make_key(cost_limit_in_usd=1.0)
    local = outage(key, lifetime=to_nano(0.5))
    earlier = local.admit(key, to_nano(0.2))
    assert earlier.admitted
    local.redis_answered(key, Admission(True, lifetime_committed=to_nano(0.5)))  # Redis is back
    local.settled(key, earlier, 0)  # the earlier call ends, billed 0
    local.redis_failed()  # the next outage: a share of 0.5 of what is left, 0.25
    assert local.admit(key, to_nano(0.2)).admitted
    assert not local.admit(key, to_nano(0.1)).admitted


def test_every_rate_window_keeps_its_share_locally() -> None:
    key = make_key(rate_limit_over_time=100, rate_limit_unit="s", rate_limits=((4, "m"),))
    local = outage(key)  # a share of 0.5: two of the minute's four
    assert [local.admit(key, 0).admitted for _ in range(3)] == [True, True, False]
    refused = local.admit(key, 0)
    assert (refused.reason, refused.rate_limit, refused.rate_window_ms) == ("rate", 4, 60_000)


def test_a_user_with_a_cost_limit_is_not_admitted_locally() -> None:
    key = make_key()
    user = User(record_id="u", user_id="alice", created_at=0, updated_at=0, cost_limit_in_usd=1)
    local = outage(key)
    with pytest.raises(ProxyError) as raised:
        local.admit(key, 0, user)
    assert raised.value.status == 503
    limited = User(record_id="v", user_id="bob", created_at=0, updated_at=0,
                   rate_limit_over_time=2, rate_limit_unit="m")  # fmt: skip
    assert [local.admit(key, 0, limited).reason for _ in range(2)] == ["", "user_rate"]


def test_without_an_override_each_replica_takes_one_over_the_replicas_announced() -> None:
    key = make_key(cost_limit_in_usd=1.0)
    local = LocalLimits("local", share=None, max_outage=300)
    local.replicas_seen = 4
    local.redis_answered(key, Admission(True, lifetime_committed=to_nano(0.2)))
    local.redis_failed()
    assert local.share == 0.25
    assert local.admit(key, to_nano(0.2)).admitted  # 0.2 of the 0.8 left
    assert not local.admit(key, to_nano(0.01)).admitted
    local.share_override = 0.5
    assert local.admit(key, to_nano(0.2)).admitted


def test_the_rate_share_is_of_what_the_window_had_left_when_redis_last_answered() -> None:
    key = make_key(rate_limit_over_time=10, rate_limit_unit="m")
    local = LocalLimits("local", share=None, max_outage=300)
    local.replicas_seen = 2
    local.redis_answered(key, Admission(True, remaining_requests=3))  # 7 counted in the window
    local.redis_failed()
    assert [local.admit(key, 0).admitted for _ in range(3)] == [True, False, False]  # 3 // 2


async def test_a_key_never_seen_starts_from_what_postgres_recorded() -> None:
    key = make_key(cost_limit_in_usd=1.0, rate_limit_over_time=8, rate_limit_unit="h")
    reads = []

    async def recorded(asked: Key) -> RecordedUsage:
        reads.append(asked.key_id)
        return RecordedUsage(spend=to_nano(0.6), window_spend=0, requests=4)

    local = LocalLimits("local", share=None, max_outage=300, recorded=recorded)
    local.replicas_seen = 2
    local.redis_failed()
    assert local.unseen(key)
    await asyncio.gather(*(local.load_recorded(key) for _ in range(5)))
    assert reads == ["k"] and not local.unseen(key)
    assert local.admit(key, to_nano(0.2)).admitted  # half of the 0.4 left
    assert not local.admit(key, to_nano(0.01)).admitted


async def test_a_key_postgres_cannot_tell_about_gets_503() -> None:
    async def recorded(asked: Key) -> RecordedUsage:
        raise OSError("postgres is away too")

    reads = []

    async def failing(asked: Key) -> RecordedUsage:
        reads.append(asked.key_id)
        return await recorded(asked)

    local = LocalLimits("local", share=None, max_outage=300, recorded=failing)
    local.redis_failed()
    for _ in range(3):
        with pytest.raises(ProxyError) as raised:
            await local.load_recorded(make_key(cost_limit_in_usd=1.0))
        assert raised.value.status == 503
    assert reads == ["k"]  # the calls right after a failure do not wait on Postgres again


def test_a_replica_that_never_read_the_number_of_replicas_has_no_safe_share() -> None:
    key = make_key(rate_limit_over_time=10, rate_limit_unit="m")
    local = LocalLimits("local", share=None, max_outage=300)
    local.redis_failed()
    with pytest.raises(ProxyError):
        local.admit(key, 0)
    local.share_override = 0.1
    assert local.admit(key, 0).admitted
