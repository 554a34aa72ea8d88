"""Admission from local leases (proxy/lease.py) against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
import redis.asyncio as redis

from proxy.admission import decide
from proxy.calls import Call
from proxy.fallback import LocalLimits
from proxy.lease import BUSY_GAP, Lease, LeasingEngine
from proxy.settlement import Settler
from shared.admissions import Admission
from shared.clusterpipe import open_pipe
from shared.config import Settings
from shared.limit_keys import SPEND_MARKER, KeyNames, Layout, rate_key, to_nano
from shared.limits import Settlement
from shared.metrics import Metrics
from shared.models import Key, User
from shared.redispipe import RedisPipe
from shared.slots import SLOTS, slot_tag
from tests.integration.test_limit_windows_and_users import make_user
from tests.integration.test_limits import make_key
from tests.unit.targets import OPENAI_TARGET


def settler_of(engine: LeasingEngine) -> Settler:
    return Settler(engine, Metrics().counter("errors_total", "errors", ("operation",)))


@pytest.fixture
async def engine(redis_client: redis.Redis, settings: Settings) -> Any:
    await redis_client.set(SPEND_MARKER, "test")
    pipe = open_pipe(settings.redis)
    engine = LeasingEngine(pipe, reservation_lifetime=60)
    yield engine
    await engine.close()
    await pipe.close()


async def counted(client: redis.Redis, name: str) -> int:
    return sum(int(v) for v in (await client.hgetall(name)).values())


async def reserved(client: redis.Redis, key: Key) -> int:
    return int(await client.hget(KeyNames.of(key).reserved, "total") or 0)


async def leased(engine: LeasingEngine, key: Key, reservation: int = 0) -> list[Admission]:
    """Two admissions of `key` at once: the second, with one in flight, asks for a lease."""
    admissions = await asyncio.gather(*(engine.admit(key, reservation) for _ in range(2)))
    assert all(a.admitted for a in admissions)
    return admissions


def lease_of(admissions: list[Admission]) -> Lease:
    [lease] = {a.lease for a in admissions if a.lease is not None}
    assert isinstance(lease, Lease)
    return lease


async def test_a_lease_is_counted_in_every_window_and_serves_without_redis(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h", rate_limits=((20_000, "d"),))
    admissions = await leased(engine, key)
    lease = lease_of(admissions)
    assert lease.slots == 4  # twice the two admissions seen at once
    for name in (rate_key(key.key_id, "h"), rate_key(key.key_id, "d")):
        assert await counted(redis_client, name) == 2 + lease.slots
    served = [await engine.admit(key) for _ in range(lease.slots)]
    assert all(a.lease is lease for a in served)
    assert await counted(redis_client, rate_key(key.key_id, "h")) == 2 + lease.slots
    # The headers' figure stays exact: the limit less every call served.
    remaining = [a.remaining_requests for a in [*admissions, *served]]
    assert sorted(remaining, reverse=True) == list(range(9_999, 9_999 - 2 - lease.slots, -1))


async def test_calls_one_at_a_time_are_leased_when_they_come_close(engine: LeasingEngine) -> None:
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    first, second = [await engine.admit(key) for _ in range(2)]
    assert first.lease is None and second.lease is not None  # within BUSY_GAP of the first
    assert (await engine.admit(key)).lease is second.lease  # no trip to Redis
    slower = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    for _ in range(3):
        assert (await engine.admit(slower)).lease is None
        await asyncio.sleep(BUSY_GAP * 1.5)


async def test_a_lease_is_granted_only_where_it_fits(engine: LeasingEngine) -> None:
    # 1% of what a call leaves is under one slot; a budget whose 1% is under one reservation.
    for key, reservation in (
        (make_key(rate_limit_over_time=100, rate_limit_unit="h"), 0),
        (make_key(cost_limit_in_usd=1.0), to_nano(0.02)),
    ):
        outcomes = await asyncio.gather(*(engine.admit(key, reservation) for _ in range(60)))
        assert not any(a.lease for a in outcomes)
    key = make_key(rate_limit_over_time=100, rate_limit_unit="h")
    outcomes = await asyncio.gather(*(engine.admit(key) for _ in range(130)))
    assert sum(a.admitted for a in outcomes) == 100


async def test_unused_slots_are_returned_at_expiry(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    lease = lease_of(await leased(engine, key))
    assert (await engine.admit(key)).lease is lease
    assert lease.until - time.monotonic() <= 1.0
    await asyncio.sleep(max(0.0, lease.until - time.monotonic()) + 0.05)
    assert lease.ended
    await asyncio.gather(*engine._in_flight)
    assert await counted(redis_client, rate_key(key.key_id, "h")) == 3  # the calls served
    assert (await engine.admit(key)).lease is not lease  # an ended lease serves no call


async def test_the_budget_is_released_after_the_last_charge(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    settler = settler_of(engine)
    flusher = asyncio.create_task(settler.run())
    key = make_key(cost_limit_in_usd=100.0)
    reservation, cost = to_nano(0.01), to_nano(0.004)
    admissions = await leased(engine, key, reservation)
    lease = lease_of(admissions)
    assert lease.budget == reservation * (1 + lease.slots)
    calls = [*admissions, await engine.admit(key, reservation)]
    for admission in calls[:-1]:
        settler.submit(Settlement(key, cost, admission.reservation))
        if admission.lease is not None:
            admission.lease.settled(admission, cost)
    engine.drop_leases()  # with one call of the lease still in flight
    await settler.drain(5)
    names = KeyNames.of(key)
    assert await reserved(redis_client, key) == lease.budget  # held still
    assert int(await redis_client.get(names.spend)) == 2 * cost
    settler.submit(Settlement(key, cost, calls[-1].reservation))
    lease.settled(calls[-1], cost)
    await settler.drain(5)
    assert await reserved(redis_client, key) == 0
    assert int(await redis_client.get(names.spend)) == 3 * cost
    settler.close(5)
    await flusher


async def serve(
    engine: LeasingEngine, settler: Settler, key: Key, cost: int, user: User | None = None
) -> bool:
    """One call as the proxy serves it: admitted, then charged what it reserved."""
    admission = await engine.admit(key, cost, user)
    if not admission.admitted:
        return False
    await asyncio.sleep(0)
    settler.submit(Settlement(key, cost, admission.reservation, user=user))
    if admission.lease is not None:
        admission.lease.settled(admission, cost)
    return True


async def served_to_the_limit(
    engine: LeasingEngine, settings: Settings, cost: int, cases: list[tuple[Key, User | None, int]]
) -> list[int]:
    """Each case's calls (a key, maybe its user, the limit that binds), 80 at a time over two
    replicas with leases (`engine` and another), well past the limit: never more served than
    it, from leases too, and nearly all of it. How many each served, once every lease is over
    and every charge applied."""
    other_pipe = open_pipe(settings.redis)
    other = LeasingEngine(other_pipe, reservation_lifetime=60)
    settlers = [settler_of(engine), settler_of(other)]
    flushers = [asyncio.create_task(s.run()) for s in settlers]
    replicas = list(zip((engine, other), settlers, strict=True))
    served_of = []
    for key, user, limit in cases:
        served = 0
        used_leases = False
        for _ in range(limit // 40 + 20):
            outcomes = await asyncio.gather(
                *(serve(*replicas[i % 2], key, cost, user) for i in range(80))
            )
            served += sum(outcomes)
            assert served <= limit
            leases = (*engine._leases.values(), *other._leases.values())
            used_leases = used_leases or any(lease.used for lease in leases)
        assert used_leases
        assert served >= limit * 0.9  # only slots or budget still leased when the limit came
        served_of.append(served)
        engine.drop_leases()
        other.drop_leases()
    await other.close()
    for settler in settlers:
        await settler.drain(5)
        settler.close(5)
    await asyncio.gather(*flushers)
    await other_pipe.close()
    await asyncio.gather(*engine._in_flight)
    return served_of


async def test_two_replicas_with_leases_never_pass_a_limit(
    engine: LeasingEngine, redis_client: redis.Redis, settings: Settings
) -> None:
    cost = to_nano(0.001)
    rated = make_key(rate_limit_over_time=1_000, rate_limit_unit="h")
    cost_key = make_key(cost_limit_in_usd=3.0)
    by_rate, by_cost = await served_to_the_limit(
        engine, settings, cost, [(rated, None, 1_000), (cost_key, None, 3_000)]
    )
    # Exact once the leases are over: every slot left unused went back, every charge arrived.
    assert await counted(redis_client, rate_key(rated.key_id, "h")) == by_rate
    assert await reserved(redis_client, cost_key) == 0
    spend = int(await redis_client.get(KeyNames.of(cost_key).spend))
    assert spend == by_cost * cost <= to_nano(3.0)


async def test_a_changed_key_drops_its_lease(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    lease = lease_of(await leased(engine, key))
    # The snapshot may read an unchanged key as a new object: the lease holds.
    assert (await engine.admit(dataclasses.replace(key))).lease is lease
    changed = dataclasses.replace(key, rate_limit_over_time=5_000)
    renewed = (await engine.admit(changed)).lease  # asked beside it: the key is busy
    assert isinstance(renewed, Lease) and renewed.key is changed
    assert lease.ended
    await asyncio.gather(*engine._in_flight)
    # Two calls, one from the lease, one of the changed key with its own lease's slots: the
    # unused slots of the first went back.
    assert await counted(redis_client, rate_key(key.key_id, "h")) == 4 + renewed.slots


def user_rate_key(engine: LeasingEngine, user: User) -> str:
    [(name, _)] = engine.user_args(user).counted()[1]
    return name


async def test_a_key_and_its_user_lease_together_counted_in_both(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    user = make_user(rate_limit_over_time=10_000, rate_limit_unit="h")
    lease = lease_of(await asyncio.gather(*(engine.admit(key, 0, user) for _ in range(2))))
    assert lease.user is user
    for name in (rate_key(key.key_id, "h"), user_rate_key(engine, user)):
        assert await counted(redis_client, name) == 2 + lease.slots
    assert (await engine.admit(key, 0, user)).lease is lease
    # The key's calls without that user are not served from it, nor a changed user's.
    assert (await engine.admit(key)).lease is not lease
    changed = dataclasses.replace(user, rate_limit_over_time=9_000)
    assert (await engine.admit(key, 0, changed)).lease is not lease
    assert lease.ended


async def test_a_users_limits_hold_with_leases_on_two_replicas(
    engine: LeasingEngine, redis_client: redis.Redis, settings: Settings
) -> None:
    cost = to_nano(0.001)
    key = make_key(rate_limit_over_time=10**9, rate_limit_unit="h", cost_limit_in_usd=10**6)
    rated = make_user(rate_limit_over_time=1_000, rate_limit_unit="h")
    priced = make_user(cost_limit_in_usd=3.0)
    by_rate, by_cost = await served_to_the_limit(
        engine, settings, cost, [(key, rated, 1_000), (key, priced, 3_000)]
    )
    assert await counted(redis_client, user_rate_key(engine, rated)) == by_rate
    spend_key, _, _, reserved_key = engine.user_args(priced).settle_keys
    assert int(await redis_client.hget(reserved_key, "total") or 0) == 0
    spend = int(await redis_client.get(spend_key))
    assert spend == by_cost * cost <= to_nano(3.0)


async def test_no_lease_for_a_limited_user_in_a_cluster_layout(
    redis_client: redis.Redis, settings: Settings
) -> None:
    layout = Layout(cluster=True)
    await redis_client.mset({layout.marker(f"{{{slot_tag(s)}}}"): "test" for s in range(SLOTS)})
    pipe = open_pipe(settings.redis)
    engine = LeasingEngine(pipe, reservation_lifetime=60, layout=layout)
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h")
    user = make_user(rate_limit_over_time=10_000, rate_limit_unit="h")
    for _ in range(3):
        outcomes = await asyncio.gather(*(engine.admit(key, 0, user) for _ in range(3)))
        assert all(a.admitted and a.lease is None for a in outcomes)
    await engine.close()
    await pipe.close()


async def test_a_redis_error_drops_every_lease_and_outage_mode_takes_none(
    engine: LeasingEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [make_key(rate_limit_over_time=10_000, rate_limit_unit="h") for _ in range(3)]
    leases = [lease_of(await leased(engine, key)) for key in keys[:2]]

    async def failing(self: RedisPipe, commands: Any) -> list[Any]:
        raise ConnectionError("Redis away")

    monkeypatch.setattr(RedisPipe, "replies", failing)
    local = LocalLimits("local", share=0.5, max_outage=300)
    errors = Metrics().counter("errors_total", "errors", ("operation",))

    async def decided(key: Key) -> Admission:
        return await decide(
            Call("r", key, OPENAI_TARGET, "chat/completions", b""), engine, local, 0, errors
        )

    assert (await decided(keys[2])).local  # Redis failed it: decided by the replica alone
    assert all(lease.ended for lease in leases)
    monkeypatch.undo()
    outcomes = await asyncio.gather(*(decided(keys[0]) for _ in range(3)))
    assert all(a.local and a.lease is None for a in outcomes)  # local limits: no lease


async def test_an_asker_who_leaves_gives_the_lease_back(
    engine: LeasingEngine, redis_client: redis.Redis
) -> None:
    """The asker's client leaves once the script is on its way, before the lease was learnt."""
    settler = settler_of(engine)
    flusher = asyncio.create_task(settler.run())
    key = make_key(rate_limit_over_time=10_000, rate_limit_unit="h", cost_limit_in_usd=100.0)
    reservation = to_nano(0.01)
    await engine.admit(make_key(cost_limit_in_usd=1.0))  # connected, script loaded
    first = asyncio.ensure_future(engine.admit(key, reservation))
    asker = asyncio.ensure_future(engine.admit(key, reservation))
    for _ in range(3):  # queued, batched, sent: on its way, before Redis can answer
        await asyncio.sleep(0)
    assert engine._in_flight
    asker.cancel()
    admission = await first
    with pytest.raises(asyncio.CancelledError):
        await asker
    assert key.key_id not in engine._leases
    await asyncio.gather(*engine._in_flight)
    await settler.drain(5)
    assert await counted(redis_client, rate_key(key.key_id, "h")) == 2  # the asker's call stays
    assert await reserved(redis_client, key) == reservation  # the first call's alone
    settler.submit(Settlement(key, 0, admission.reservation))
    await settler.drain(5)
    settler.close(5)
    await flusher
