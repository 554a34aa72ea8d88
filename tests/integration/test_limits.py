"""The limit engine against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as redis

from proxy.settlement import Settler
from shared.admissions import Admission, LimitsNotReady
from shared.limit_keys import (
    EVENTS_STREAM,
    MAX_CALL_NANO,
    REPLICAS,
    SPEND_MARKER,
    KeyNames,
    Script,
    to_nano,
    to_usd,
)
from shared.limits import LimitEngine, Settlement, UnusableSettlement, announce, withdraw
from shared.metrics import Metrics
from shared.models import Key
from shared.redispipe import RedisPipe, RedisReplyError, _Connection


def make_key(**limits: object) -> Key:
    return Key(
        key_id=str(uuid.uuid4()),
        name="k",
        key_hash=uuid.uuid4().hex,
        created_at=0,
        updated_at=0,
        **limits,  # type: ignore[arg-type]
    )


REPLICA = uuid.uuid4().hex
BATCH_NUMBERS = itertools.count(1)


async def settle(engine: LimitEngine, batch: list[Settlement]) -> None:
    """Settle as one replica's next batch."""
    await engine.settle(batch, REPLICA, next(BATCH_NUMBERS))


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
    assert len(admitted) == 4  # admitted while 0, 0.3, 0.6 and 0.9 were committed
    assert {r.reason for r in results if not r.admitted} == {"cost_reserved"}
    await settle(engine, [Settlement(key, to_nano(0.2), r.reservation) for r in admitted])
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.8)
    # 0.2 left: a request that may cost 0.3 is admitted, and holds the rest while in flight.
    assert (await engine.admit(key, to_nano(0.3))).admitted
    assert (await engine.admit(key, to_nano(0.01))).reason == "cost_reserved"


async def test_spent_budget_is_refused_without_retry(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=0.01)
    first = await engine.admit(key)
    assert first.admitted
    await settle(engine, [Settlement(key, to_nano(0.02), first.reservation)])
    refused = await engine.admit(key)
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "cost", None)


async def test_windowed_cost_refuses_with_retry_after(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd_over_time=0.5, cost_limit_in_usd_unit="s")
    admission = await engine.admit(key)
    await settle(engine, [Settlement(key, to_nano(0.6), admission.reservation)])
    refused = await engine.admit(key)
    assert (refused.admitted, refused.reason) == (False, "window")
    assert refused.retry_after is not None and 0 < refused.retry_after <= 1.1
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await engine.admit(key)).admitted
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.6)


async def test_reservations_lapse_when_never_settled(pipe: RedisPipe, engine: LimitEngine) -> None:
    engine = LimitEngine(pipe, reservation_lifetime=1)
    key = make_key(cost_limit_in_usd=1.0)
    assert (await engine.admit(key, to_nano(1.0))).admitted
    assert not (await engine.admit(key, to_nano(0.5))).admitted
    await asyncio.sleep(1.1)
    assert (await engine.admit(key, to_nano(0.5))).admitted


async def test_settling_twice_releases_once(engine: LimitEngine) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    first = await engine.admit(key, to_nano(1.0))
    await settle(engine, [Settlement(key, 0, first.reservation)])
    await settle(engine, [Settlement(key, 0, first.reservation)])
    # Released once: a second call reserving the whole budget holds it all.
    assert (await engine.admit(key, to_nano(1.0))).admitted
    assert not (await engine.admit(key, to_nano(0.1))).admitted


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
    await settle(engine, [Settlement(key, to_nano(0.05), admission.reservation)])
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
    await settle(engine, [Settlement(key, to_nano(0.1), admission.reservation)])
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
    original = _Connection.send

    def counting(self: _Connection, commands: Any) -> asyncio.Future[list[Any]]:
        nonlocal sent
        sent += 1  # each send is one write, whose replies come back together
        return original(self, commands)

    monkeypatch.setattr(_Connection, "send", counting)
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
    number = next(BATCH_NUMBERS)
    await engine.settle(batch, REPLICA, number)
    await engine.settle(batch, REPLICA, number)
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.2)
    assert await redis_client.xlen(EVENTS_STREAM) == before + 1
    await settle(engine, [Settlement(key, to_nano(0.1))])
    assert (await engine.usage(key)).cost_usd == pytest.approx(0.3)


async def test_the_calls_own_reservation_need_not_fit(engine: LimitEngine) -> None:
    """A fresh key is never refused for good with nothing spent."""
    key = make_key(cost_limit_in_usd=5.0, cost_limit_in_usd_over_time=5.0)
    admission = await engine.admit(key, to_nano(40.0))
    assert admission.admitted
    assert admission.lifetime_committed == to_nano(40.0)


async def test_a_refusal_caused_by_reservations_in_flight_is_retryable(
    engine: LimitEngine,
) -> None:
    key = make_key(cost_limit_in_usd=1.0)
    first = await engine.admit(key, to_nano(0.7))
    second = await engine.admit(key, to_nano(0.7))  # 0.7 committed by others: below the limit
    assert first.admitted and second.admitted
    refused = await engine.admit(key, to_nano(0.1))
    assert (refused.admitted, refused.reason) == (False, "cost_reserved")
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 5
    await settle(engine, [Settlement(key, 0, first.reservation)])
    assert (await engine.admit(key, to_nano(0.1))).admitted


async def test_a_windowed_refusal_caused_by_reservations_is_retryable_soon(
    engine: LimitEngine,
) -> None:
    key = make_key(cost_limit_in_usd_over_time=1.0, cost_limit_in_usd_unit="d")
    assert (await engine.admit(key, to_nano(1.5))).admitted
    refused = await engine.admit(key, to_nano(0.1))
    assert (refused.admitted, refused.reason) == (False, "window_reserved")
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 5


async def test_spend_alone_at_the_limit_is_final(
    engine: LimitEngine,
) -> None:
    key = make_key(cost_limit_in_usd=1.0, cost_limit_in_usd_over_time=1.0)
    first = await engine.admit(key)
    await settle(engine, [Settlement(key, to_nano(1.0), first.reservation)])
    refused = await engine.admit(key, 0)
    assert (refused.admitted, refused.reason, refused.retry_after) == (False, "cost", None)


async def test_more_lapsed_reservations_than_lua_can_unpack_are_expired_in_steps(
    pipe: RedisPipe, engine: LimitEngine, redis_client: redis.Redis
) -> None:
    engine = LimitEngine(pipe, reservation_lifetime=60)
    key = make_key(cost_limit_in_usd=1000.0)
    names = KeyNames.of(key)
    lapsed = 9_000
    amount = to_nano(0.01)
    await redis_client.zadd(names.reservations, {f"lapsed-{i}": 1000 + i for i in range(lapsed)})
    await redis_client.hset(names.reserved, mapping={f"lapsed-{i}": amount for i in range(lapsed)})
    await redis_client.hset(names.reserved, "total", lapsed * amount)
    admissions = [await engine.admit(key, to_nano(1.0)) for _ in range(12)]
    assert all(a.admitted for a in admissions)
    # Every lapsed one is gone, and the total holds only the twelve reservations just made.
    assert await redis_client.zcard(names.reservations) == 12
    assert await redis_client.hlen(names.reserved) == 13
    assert int(await redis_client.hget(names.reserved, "total")) == 12 * to_nano(1.0)


async def test_an_error_reply_fails_only_its_own_admission(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    broken = make_key(rate_limit_over_time=5, rate_limit_unit="m")
    await redis_client.set(KeyNames.of(broken).rate, "not a hash")
    fine = [make_key(rate_limit_over_time=5, rate_limit_unit="m") for _ in range(4)]
    results = await asyncio.gather(
        *(engine.admit(key) for key in [fine[0], fine[1], broken, fine[2], fine[3]]),
        return_exceptions=True,
    )
    assert isinstance(results[2], RedisReplyError) and "WRONGTYPE" in str(results[2])
    assert all(isinstance(r, Admission) and r.admitted for i, r in enumerate(results) if i != 2)


async def test_only_the_admissions_that_got_noscript_are_sent_again(
    engine: LimitEngine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client loads the script while a batch runs: the commands after it ran once."""
    key = make_key(rate_limit_over_time=100, rate_limit_unit="m", cost_limit_in_usd=100.0)
    await redis_client.script_flush()
    source = Script.named("admit.lua").source
    send = _Connection.send
    injected = False

    def send_with_a_load_in_the_middle(
        self: _Connection, commands: Any
    ) -> asyncio.Future[list[Any]]:
        nonlocal injected
        if injected or len(commands) < 6 or commands[0][0] != "EVALSHA":
            return send(self, commands)
        injected = True
        middle = len(commands) // 2
        sent = send(self, [*commands[:middle], ("SCRIPT", "LOAD", source), *commands[middle:]])
        replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def without_the_load(done: asyncio.Future[list[Any]]) -> None:
            if done.exception() is not None:
                replies.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                got = done.result()
                replies.set_result(got[:middle] + got[middle + 1 :])

        sent.add_done_callback(without_the_load)
        return replies

    monkeypatch.setattr(_Connection, "send", send_with_a_load_in_the_middle)
    results = await asyncio.gather(*(engine.admit(key, to_nano(1.0)) for _ in range(10)))
    assert injected and all(r.admitted for r in results)
    names = KeyNames.of(key)
    assert (await engine.usage(key)).requests_in_window == 10
    assert await redis_client.zcard(names.reservations) == 10
    assert int(await redis_client.hget(names.reserved, "total")) == 10 * to_nano(1.0)


async def assert_released(
    settler: Settler, flusher: asyncio.Task[None], redis_client: redis.Redis, names: KeyNames
) -> None:
    """The key holds no reservation once the settlement queue has had a moment to drain."""
    for _ in range(250):
        if await redis_client.zcard(names.reservations) == 0:
            break
        await asyncio.sleep(0.02)
    settler.close(within=2)
    await asyncio.wait_for(flusher, 5)
    assert await redis_client.zcard(names.reservations) == 0
    assert int(await redis_client.hget(names.reserved, "total") or 0) == 0


async def test_an_admission_abandoned_by_its_caller_releases_its_reservation(
    engine: LimitEngine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client leaves once the script is on its way, before the call learnt the answer."""
    settler = Settler(engine, Metrics().counter("errors_total", "errors", ("operation",)))
    flusher = asyncio.create_task(settler.run())
    key = make_key(cost_limit_in_usd=1.0)
    names = KeyNames.of(key)
    await engine.admit(make_key(cost_limit_in_usd=1.0))  # connected, script loaded
    sent = asyncio.Event()
    send = _Connection.send

    def noting_send(self: _Connection, commands: Any) -> asyncio.Future[list[Any]]:
        replies = send(self, commands)
        sent.set()
        return replies

    monkeypatch.setattr(_Connection, "send", noting_send)
    admitting = asyncio.create_task(engine.admit(key, to_nano(0.9)))
    await sent.wait()
    admitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await admitting
    await assert_released(settler, flusher, redis_client, names)


async def test_an_admission_whose_reply_timed_out_releases_what_redis_reserved(
    engine: LimitEngine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the script but its reply came too late: the call was decided without Redis,
    and the reservation Redis holds for it must not wait minutes to lapse."""
    settler = Settler(engine, Metrics().counter("errors_total", "errors", ("operation",)))
    key = make_key(cost_limit_in_usd=1.0)
    names = KeyNames.of(key)
    replies = RedisPipe.replies

    async def late_replies(self: RedisPipe, commands: Any) -> list[Any]:
        await replies(self, commands)  # Redis runs them...
        raise TimeoutError("Redis did not answer in time")  # ...but the answer is too late

    monkeypatch.setattr(RedisPipe, "replies", late_replies)
    with pytest.raises(TimeoutError):
        await engine.admit(key, to_nano(0.9))
    monkeypatch.undo()
    assert await redis_client.zcard(names.reservations) == 1  # the queue is not flushed yet
    flusher = asyncio.create_task(settler.run())
    await assert_released(settler, flusher, redis_client, names)


async def test_settle_batches_leave_no_key_per_batch(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(cost_limit_in_usd=100.0)
    await settle(engine, [Settlement(key, 1)])
    before = await redis_client.dbsize()
    for _ in range(50):
        await settle(engine, [Settlement(key, 1, event=b'{"event_id": "y"}')])
    assert await redis_client.dbsize() == before
    assert (await engine.usage(key)).cost_usd == pytest.approx(to_usd(51))


async def test_a_batch_that_fails_part_way_applies_nothing_and_its_retry_applies_all(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    first, second = make_key(cost_limit_in_usd=10.0), make_key(cost_limit_in_usd=10.0)
    await redis_client.hset(KeyNames.of(second).spend, "not", "a counter")
    batch = [Settlement(first, to_nano(1.0)), Settlement(second, to_nano(2.0))]
    number = next(BATCH_NUMBERS)
    with pytest.raises(UnusableSettlement) as raised:
        await engine.settle(batch, REPLICA, number)
    assert raised.value.index == 1 and "hash" in str(raised.value)
    assert (await engine.usage(first)).cost_usd == 0
    await redis_client.delete(KeyNames.of(second).spend)
    await engine.settle(batch, REPLICA, number)
    assert (await engine.usage(first)).cost_usd == pytest.approx(1.0)
    assert (await engine.usage(second)).cost_usd == pytest.approx(2.0)


async def test_an_admission_given_up_before_it_was_sent_never_reaches_redis(
    engine: LimitEngine,
) -> None:
    key = make_key(rate_limit_over_time=5, rate_limit_unit="m")
    admitting = asyncio.create_task(engine.admit(key))
    await asyncio.sleep(0)  # queued for the next loop turn's batch
    admitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await admitting
    assert (await engine.admit(key)).remaining_requests == 4


async def test_a_window_spent_is_reported_before_a_lifetime_budget_held_in_flight(
    engine: LimitEngine,
) -> None:
    key = make_key(
        cost_limit_in_usd=1.0, cost_limit_in_usd_over_time=0.5, cost_limit_in_usd_unit="h"
    )
    assert (await engine.admit(key, to_nano(0.6))).admitted  # stays in flight
    spending = await engine.admit(key)
    await settle(engine, [Settlement(key, to_nano(0.5), spending.reservation)])
    # Lifetime: 0.5 spent + 0.6 in flight holds it all; the window is spent: that is what counts.
    refused = await engine.admit(key, to_nano(0.1))
    assert (refused.admitted, refused.reason) == (False, "window")
    assert refused.retry_after is not None and refused.retry_after > 5


async def test_absurd_reservations_and_costs_are_capped_below_redis_integer_range(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    """`max_tokens: 10**15` on a dear model, or a usage report of 2**64 tokens, must not overflow
    a 64-bit counter part-way through a script (that leaves a phantom reservation behind)."""
    key = make_key(cost_limit_in_usd=5.0)
    admission = await engine.admit(key, 2**64)
    assert admission.admitted and admission.lifetime_committed == MAX_CALL_NANO
    await settle(engine, [Settlement(key, 2**64, admission.reservation)])
    names = KeyNames.of(key)
    assert int(await redis_client.get(names.spend)) == MAX_CALL_NANO
    assert int(await redis_client.hget(names.reserved, "total") or 0) == 0
    refused = await engine.admit(key, 2**64)
    assert (refused.admitted, refused.reason) == (False, "cost")


async def test_admissions_made_without_redis_fill_its_rate_window(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=5, rate_limit_unit="m")
    now_ms = int(time.time() * 1000)
    # Three within the window, one older than it, which counts for nothing.
    local = [(key, now_ms - 1000), (key, now_ms - 500), (key, now_ms), (key, now_ms - 120_000)]
    assert await engine.record_admissions(local)
    results = [await engine.admit(key) for _ in range(4)]
    assert [r.admitted for r in results] == [True, True, False, False]
    assert 0 < await redis_client.pttl(KeyNames.of(key).rate) <= 61_000
    assert (await engine.usage(key)).requests_in_window == 5


async def test_admissions_are_not_written_into_a_redis_that_lost_its_data(
    engine: LimitEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=5, rate_limit_unit="m")
    await redis_client.delete(SPEND_MARKER)
    assert not await engine.record_admissions([(key, int(time.time() * 1000))])
    assert not await redis_client.exists(KeyNames.of(key).rate)
    assert not await engine.record_admissions([])  # the probe of an idle replica


async def test_replicas_are_counted_while_their_announcements_last(pipe: RedisPipe) -> None:
    await pipe.execute([("DEL", REPLICAS)])
    assert await announce(pipe, "replica-a", 60_000) == 1
    assert await announce(pipe, "replica-b", 1) == 2
    await asyncio.sleep(0.01)
    assert await announce(pipe, "replica-a", 60_000) == 1  # b lapsed
    await withdraw(pipe, "replica-a")
    assert await announce(pipe, "replica-c", 60_000) == 1
