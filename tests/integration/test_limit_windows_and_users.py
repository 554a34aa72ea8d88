"""Extra rate windows and end users' limits in the one admission script (in a cluster's layout, a
script each for a key and its user), against a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
import redis.asyncio as redis

from shared.limit_keys import EVENT_FIELD, ONE_REDIS, KeyNames, Layout, to_nano
from shared.limits import LimitEngine, Settlement
from shared.models import User
from shared.redispipe import RedisPipe
from shared.slots import SLOTS, slot_tag
from tests.integration.test_limits import make_key, settle


def make_user(**limits: object) -> User:
    return User(
        record_id=str(uuid.uuid4()),
        user_id="end-user",
        created_at=0,
        updated_at=0,
        **limits,  # type: ignore[arg-type]
    )


CLUSTER_LAYOUT = Layout(cluster=True)


@pytest.fixture(params=[ONE_REDIS, CLUSTER_LAYOUT], ids=["one-redis", "cluster-layout"])
async def engine(
    redis_client: redis.Redis, pipe: RedisPipe, request: pytest.FixtureRequest
) -> LimitEngine:
    """On one Redis; and with the cluster's layout (a script per slot: a key and its user apart),
    which one Redis serves alike, every slot's spend marker set."""
    layout: Layout = request.param
    await redis_client.mset({layout.marker(f"{{{slot_tag(s)}}}"): "test" for s in range(SLOTS)})
    return LimitEngine(pipe, reservation_lifetime=60, layout=layout)


async def bursts(engine: LimitEngine, admit: object, seconds: float, size: int) -> list[float]:
    """Bursts of `size` admissions every 0.1 s: the times of those admitted."""
    admitted_at: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        results = await asyncio.gather(*(admit() for _ in range(size)))  # type: ignore[operator]
        now = time.monotonic()
        admitted_at += [now for r in results if r.admitted]
        await asyncio.sleep(0.1)
    return admitted_at


def most_in_any(admitted_at: list[float], seconds: float) -> int:
    return max(
        (len([t for t in admitted_at if start <= t < start + seconds]) for start in admitted_at),
        default=0,
    )


@pytest.mark.parametrize(
    "limits",
    [
        {"rate_limit_over_time": 3, "rate_limit_unit": "s", "rate_limits": ((5, "m"),)},
        {"rate_limits": ((3, "s"), (5, "m"))},
        {"rate_limit_over_time": 5, "rate_limit_unit": "m", "rate_limits": ((3, "s"),)},
        # Windows of one unit count alike: the strictest holds.
        {"rate_limit_over_time": 9, "rate_limit_unit": "s", "rate_limits": ((3, "s"), (5, "m"))},
    ],
)
async def test_three_a_second_and_five_a_minute_are_each_never_exceeded(
    engine: LimitEngine, limits: dict[str, object]
) -> None:
    key = make_key(**limits)
    admitted_at = await bursts(engine, lambda: engine.admit(key), 2.5, 4)
    assert most_in_any(admitted_at, 1.0) <= 3
    assert len(admitted_at) == 5  # the minute's five, reached within 2.5 s by three a second
    refused = await engine.admit(key)
    assert (refused.reason, refused.rate_limit, refused.rate_window_ms) == ("rate", 5, 60_000)
    assert 0 < (refused.retry_after or 0) <= 61


async def test_a_users_rate_limit_holds_beside_the_keys(engine: LimitEngine) -> None:
    key = make_key(rate_limit_over_time=100, rate_limit_unit="m")
    alice, bob = make_user(rate_limit_over_time=2, rate_limit_unit="m"), make_user()
    results = await asyncio.gather(*(engine.admit(key, 0, alice) for _ in range(5)))
    assert [r.admitted for r in results].count(True) == 2
    assert {r.reason for r in results if not r.admitted} == {"user_rate"}
    assert (await engine.admit(key, 0, bob)).admitted
    assert (await engine.usage(key)).requests_in_window == 3
    assert (await engine.usage(alice)).requests_in_window == 2


async def test_a_users_cost_limit_refuses_that_user_only(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=100.0)
    alice = make_user(cost_limit_in_usd=1.0)
    bob = make_user(cost_limit_in_usd=1.0)
    first = await engine.admit(key, to_nano(0.1), alice)
    assert first.admitted and first.reservation
    await settle(engine, [Settlement(key, to_nano(1.0), first.reservation, user=alice)])
    assert (await engine.usage(alice)).cost_usd == pytest.approx(1.0)
    assert (await engine.usage(key)).cost_usd == pytest.approx(1.0)
    refused = await engine.admit(key, to_nano(0.1), alice)
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "user_cost", None)
    assert (await engine.admit(key, to_nano(0.1), bob)).admitted


async def test_reservations_hold_a_users_budget_and_settle_release_them(
    engine: LimitEngine,
) -> None:
    key = make_key()  # no limits of its own: the user's alone decide
    alice = make_user(cost_limit_in_usd_over_time=1.0, cost_limit_in_usd_unit="h")
    results = await asyncio.gather(*(engine.admit(key, to_nano(0.3), alice) for _ in range(6)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 4
    assert {r.reason for r in results if not r.admitted} == {"user_window_reserved"}
    await settle(engine, [Settlement(key, 0, r.reservation, user=alice) for r in admitted])
    assert (await engine.admit(key, to_nano(0.3), alice)).admitted


async def test_a_key_refusal_reserves_nothing_for_the_user(engine: LimitEngine) -> None:
    key = make_key(rate_limit_over_time=1, rate_limit_unit="m")
    alice = make_user(cost_limit_in_usd=1.0, rate_limit_over_time=5, rate_limit_unit="m")
    assert (await engine.admit(key, to_nano(0.9), alice)).admitted
    assert (await engine.admit(key, to_nano(0.9), alice)).reason == "rate"
    usage = await engine.usage(alice)
    assert usage.requests_in_window == 1


async def test_a_user_refusal_leaves_the_keys_windows_and_budget_as_they_were(
    engine: LimitEngine,
) -> None:
    key = make_key(
        rate_limit_over_time=10,
        rate_limit_unit="m",
        rate_limits=((10, "h"),),
        cost_limit_in_usd=1.0,
    )
    alice = make_user(rate_limit_over_time=1, rate_limit_unit="m")
    assert (await engine.admit(key, to_nano(0.4), alice)).admitted
    refusals = [await engine.admit(key, to_nano(0.4), alice) for _ in range(3)]
    assert {r.reason for r in refusals} == {"user_rate"}
    assert (await engine.usage(key)).requests_in_window == 1
    # The refused calls hold no budget: two more calls of 0.4 fit beside the first one's.
    bob = make_user()
    assert [(await engine.admit(key, to_nano(0.4), bob)).admitted for _ in range(3)] == [
        True,
        True,
        False,
    ]


async def test_settled_events_go_to_the_stream_of_their_keys_slot(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    keys = [make_key() for _ in range(4)]
    alice = make_user(cost_limit_in_usd=5.0)
    events = [orjson.dumps({"keyId": key.key_id}) for key in keys]
    await settle(
        engine,
        [Settlement(k, 1000, event=e, user=alice) for k, e in zip(keys, events, strict=True)],
    )
    layout = engine.layout
    for key, event in zip(keys, events, strict=True):
        entries = await redis_client.xrange(layout.stream(KeyNames.of(key).spend))
        assert event in [fields[EVENT_FIELD.encode()] for _, fields in entries]
    assert (await engine.usage(alice)).cost_usd == pytest.approx(4000 / 1e9)
    assert [(await engine.usage(key)).cost_usd for key in keys] == [pytest.approx(1e-6)] * 4
