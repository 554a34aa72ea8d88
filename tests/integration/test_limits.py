"""The limit engine against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as redis

from shared.limits import (
    EVENTS_STREAM,
    SPEND_MARKER,
    LimitEngine,
    LimitsNotReady,
    Settlement,
    to_nano,
)
from shared.models import Key
from shared.redispipe import RedisPipe


def make_key(**limits: object) -> Key:
    return Key(
        key_id=str(uuid.uuid4()),
        name="k",
        key_hash=uuid.uuid4().hex,
        created_at=0,
        updated_at=0,
        **limits,  # type: ignore[arg-type]
    )


@pytest.fixture
async def engine(redis_client: redis.Redis, pipe: RedisPipe) -> LimitEngine:
    await redis_client.set(SPEND_MARKER, "test")
    return LimitEngine(pipe, reservation_lifetime=60)


async def test_concurrent_admissions_admit_exactly_the_limit(engine: LimitEngine) -> None:
    key = make_key(rate_limit_over_time=7, rate_limit_unit="m")
    results = await asyncio.gather(*(engine.admit(key) for _ in range(40)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 7
    assert sorted(r.remaining_requests for r in admitted) == list(range(7))
    refused = [r for r in results if not r.admitted]
    assert {r.reason for r in refused} == {"rate"}
    assert all(0 < (r.retry_after or 0) <= 61 for r in refused)


async def test_sliding_window_never_admits_more_than_n_in_any_unit(engine: LimitEngine) -> None:
    """Bursts every 0.1 s for 2.5 s against 5 per second: any 1 s interval holds at most 5."""
    key = make_key(rate_limit_over_time=5, rate_limit_unit="s")
    admitted_at: list[float] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        results = await asyncio.gather(*(engine.admit(key) for _ in range(3)))
        now = time.monotonic()
        admitted_at += [now for r in results if r.admitted]
        await asyncio.sleep(0.1)
    assert len(admitted_at) >= 10  # the window does slide
    for start in admitted_at:
        in_window = [t for t in admitted_at if start <= t < start + 1.0]
        assert len(in_window) <= 5


async def test_reservations_keep_concurrent_requests_within_budget(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    results = await asyncio.gather(*(engine.admit(key, to_nano(0.3)) for _ in range(10)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 3
    assert {r.reason for r in results if not r.admitted} == {"cost"}
    await engine.settle(
        [Settlement(key, to_nano(0.25), r.reservation) for r in admitted], uuid.uuid4().hex
    )
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.75)
    # 0.25 left: a request that may cost 0.3 is refused, one that may cost 0.2 is not.
    assert not (await engine.admit(key, to_nano(0.3))).admitted
    assert (await engine.admit(key, to_nano(0.2))).admitted


async def test_spent_budget_is_refused_without_retry(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=0.01)
    first = await engine.admit(key)
    assert first.admitted
    await engine.settle([Settlement(key, to_nano(0.02), first.reservation)], uuid.uuid4().hex)
    refused = await engine.admit(key)
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "cost", None)


async def test_windowed_cost_refuses_with_retry_after(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd_over_time=0.5, cost_limit_in_usd_unit="s")
    admission = await engine.admit(key)
    await engine.settle([Settlement(key, to_nano(0.6), admission.reservation)], uuid.uuid4().hex)
    refused = await engine.admit(key)
    assert (refused.admitted, refused.reason) == (False, "window")
    assert refused.retry_after is not None and 0 < refused.retry_after <= 1.1
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await engine.admit(key)).admitted
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.6)


async def test_reservations_lapse_when_never_settled(pipe: RedisPipe, engine: LimitEngine) -> None:
    engine = LimitEngine(pipe, reservation_lifetime=1)
    key = make_key(cost_limit_in_usd=1.0)
    assert (await engine.admit(key, to_nano(0.9))).admitted
    assert not (await engine.admit(key, to_nano(0.5))).admitted
    await asyncio.sleep(1.1)
    assert (await engine.admit(key, to_nano(0.5))).admitted


async def test_settling_twice_releases_once(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    first = await engine.admit(key, to_nano(0.6))
    await engine.settle([Settlement(key, 0, first.reservation)], uuid.uuid4().hex)
    await engine.settle([Settlement(key, 0, first.reservation)], uuid.uuid4().hex)
    # Released once: a second 0.6 fits, a third does not.
    assert (await engine.admit(key, to_nano(0.6))).admitted
    assert not (await engine.admit(key, to_nano(0.6))).admitted


async def test_every_key_is_under_the_prefix(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(
        rate_limit_over_time=3,
        rate_limit_unit="m",
        cost_limit_in_usd=1.0,
        cost_limit_in_usd_over_time=1.0,
        cost_limit_in_usd_unit="h",
    )
    admission = await engine.admit(key, to_nano(0.1))
    await engine.settle([Settlement(key, to_nano(0.05), admission.reservation)], uuid.uuid4().hex)
    await engine.admit(key, to_nano(0.1))
    written = [k.decode() async for k in redis_client.scan_iter(match=f"*{key.key_id}*")]
    assert len(written) >= 4
    assert all(k.startswith("gw:") for k in written)
    usage = await engine.usage(key)
    assert (usage.cost_usd, usage.cost_usd_in_window, usage.requests_in_window) == (
        pytest.approx(0.05),
        pytest.approx(0.05),
        2,
    )


async def test_scripts_lost_by_redis_are_loaded_again(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    admission = await engine.admit(key, to_nano(0.1))
    await redis_client.script_flush()
    await engine.settle([Settlement(key, to_nano(0.1), admission.reservation)], uuid.uuid4().hex)
    await redis_client.script_flush()
    assert (await engine.admit(key, to_nano(0.1))).admitted
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.1)


async def test_a_redis_without_restored_spend_is_not_trusted(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    await redis_client.delete(SPEND_MARKER)
    with pytest.raises(LimitsNotReady):
        await engine.admit(key)
    await redis_client.set(SPEND_MARKER, "restored")
    assert (await engine.admit(key)).admitted


async def test_admissions_of_one_loop_turn_share_a_round_trip(
    engine: LimitEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(rate_limit_over_time=1000, rate_limit_unit="m")
    await engine.admit(key)  # connection made, script loaded
    sent = 0
    original = RedisPipe.execute

    async def counting(self: RedisPipe, commands: Any) -> list[Any]:
        nonlocal sent
        sent += 1  # each execute is one write and one wait for its replies
        return await original(self, commands)

    monkeypatch.setattr(RedisPipe, "execute", counting)
    results = await asyncio.gather(*(engine.admit(key) for _ in range(50)))
    assert all(r.admitted for r in results)
    assert sorted(r.remaining_requests for r in results) == list(range(949, 999))
    assert sent == 1


async def test_a_changed_key_is_admitted_by_its_new_limits(engine: LimitEngine) -> None:
    key = make_key(rate_limit_over_time=1, rate_limit_unit="m")
    assert (await engine.admit(key)).admitted
    assert not (await engine.admit(key)).admitted
    raised = dataclasses.replace(key, rate_limit_over_time=2)  # what a refresh brings
    assert (await engine.admit(raised)).admitted
    assert not (await engine.admit(raised)).admitted


async def test_a_batch_sent_again_is_applied_once(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    """What the settlement queue does when the reply to a batch Redis applied was lost."""
    key = make_key(cost_limit_in_usd=1.0)
    admission = await engine.admit(key, to_nano(0.5))
    before = await redis_client.xlen(EVENTS_STREAM)
    batch = [Settlement(key, to_nano(0.2), admission.reservation, b'{"event_id": "x"}')]
    batch_id = uuid.uuid4().hex
    await engine.settle(batch, batch_id)
    await engine.settle(batch, batch_id)
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.2)
    assert await redis_client.xlen(EVENTS_STREAM) == before + 1
    await engine.settle([Settlement(key, to_nano(0.1))], uuid.uuid4().hex)
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.3)
