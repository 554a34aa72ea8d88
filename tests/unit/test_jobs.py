"""Jobs: what a finished one costs, the Redis record and its once-only claim, and the watcher."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.calls import Call
from proxy.fakeupstream import create_fake_upstream
from proxy.jobs import watcher as watcher_module
from proxy.jobs.billing import JOBS, Jobs
from proxy.jobs.hook import Creation, Read, refuse_unpriced, track
from proxy.jobs.kinds import (
    BATCH,
    FINE_TUNING,
    JOB_ID,
    RESPONSE,
    Job,
    cost_of,
    is_finished,
    usage_of,
)
from proxy.jobs.store import JOBS_INDEX, LEASE, JobStore
from proxy.jobs.watcher import JobWatcher
from proxy.metering import Usage
from proxy.provider_settings import SettingSnapshot
from proxy.settlement import Settler
from proxy.snapshot import KeySnapshot
from proxy.targets import Targets
from proxy.telemetry import ProxyMetrics
from proxy.typedefs import PRICING
from shared.config import RedisSettings, Settings
from shared.limits import LimitEngine
from shared.metrics import Metrics
from shared.models import Key
from shared.pricing import Pricing, Rates
from shared.redispipe import RedisPipe
from tests.unit.targets import OPENAI_TARGET

RATES = Rates(input=1e-4, output=1e-3, cached_input=2.5e-5, training=2e-4)
MODEL = "priced-model"
LINE = {"model": MODEL, "messages": [{"role": "user", "content": "hello there friend"}]}
LINE_COST = 6 * 1e-4 + 5 * 1e-3  # the fake's count for LINE: 6 prompt, 5 completion tokens


def new_key(**fields: Any) -> Key:
    key_id, key_hash = str(uuid.uuid4()), uuid.uuid4().hex
    return Key(key_id=key_id, name="", key_hash=key_hash, created_at=0, updated_at=0, **fields)


def job_of(key: Key, job_id: str, kind: Any = BATCH, model: str = MODEL) -> Job:
    return Job(job_id, key.key_id, kind, model, "/v1/chat/completions", "req-1")


# --- what a finished job costs -----------------------------------------------------------------


def test_a_batch_costs_half_its_usage_at_the_model_rates() -> None:
    resource = {
        "object": "batch",
        "status": "completed",
        "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}},
    }
    usage = usage_of(BATCH, {**resource, "usage": {**resource["usage"], "output_tokens": 10}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (100, 10, 40)
    full = 60 * RATES.input + 40 * RATES.cached_input + 10 * RATES.output
    assert cost_of(BATCH, RATES, usage) == pytest.approx(full / 2)


def test_fine_tuning_costs_its_trained_tokens_at_the_training_price() -> None:
    usage = usage_of(FINE_TUNING, {"trained_tokens": 1000, "usage": {"input_tokens": 5}})
    assert (usage.prompt_tokens, usage.completion_tokens) == (1000, 0)
    assert cost_of(FINE_TUNING, RATES, usage) == pytest.approx(1000 * 2e-4)
    assert usage_of(FINE_TUNING, {"trained_tokens": None}).prompt_tokens == 0


def test_a_background_response_costs_like_a_response() -> None:
    usage = Usage(prompt_tokens=7, completion_tokens=3)
    assert cost_of(RESPONSE, RATES, usage) == pytest.approx(7 * 1e-4 + 3 * 1e-3)


def test_a_job_prices_audio_and_image_tokens_as_the_same_call_made_at_once() -> None:
    rates = replace(RATES, input_audio=1e-2, output_image=5e-2)
    usage = Usage(prompt_tokens=10, completion_tokens=4, audio_tokens=6, output_image_tokens=3)
    at_once = 4 * rates.input + 6 * 1e-2 + 1 * rates.output + 3 * 5e-2
    assert cost_of(RESPONSE, rates, usage) == pytest.approx(at_once)
    assert cost_of(BATCH, rates, usage) == pytest.approx(at_once / 2)


def test_only_the_terminal_states_of_the_right_object_are_finished() -> None:
    assert is_finished(BATCH, {"object": "batch", "status": "cancelled"})
    assert not is_finished(BATCH, {"object": "batch", "status": "cancelling"})
    assert not is_finished(BATCH, {"object": "response", "status": "completed"})
    assert is_finished(FINE_TUNING, {"object": "fine_tuning.job", "status": "succeeded"})
    assert not is_finished(FINE_TUNING, {"object": "fine_tuning.job", "status": "running"})
    assert is_finished(RESPONSE, {"object": "response", "status": "incomplete"})
    assert not is_finished(RESPONSE, {"object": "response", "status": "queued"})


# --- which calls are job calls ------------------------------------------------------------------


@pytest.fixture
def app(pipe: RedisPipe) -> web.Application:
    application = web.Application()
    application[PRICING] = Pricing({MODEL: RATES})
    settler = Settler(LimitEngine(pipe, 60), errors())
    targets = Targets(Settings(), SettingSnapshot())
    application[JOBS] = Jobs(
        JobStore(pipe), KeySnapshot(), application[PRICING], settler, metrics(), targets
    )
    return application


def errors() -> Any:
    return Metrics().counter("errors_total", "errors", ("operation",))


def metrics() -> ProxyMetrics:
    return ProxyMetrics.register(Metrics())


def call_of(endpoint: str, body: dict[str, Any] | None = None, **key_fields: Any) -> Call:
    raw = orjson.dumps(body) if body is not None else b""
    payload = body if endpoint == "responses" else None
    return Call("req-1", new_key(**key_fields), OPENAI_TARGET, endpoint, raw, payload)


@pytest.mark.parametrize(
    ("method", "endpoint", "body", "expected"),
    [
        ("POST", "batches", {"endpoint": "/v1/embeddings"}, Creation),
        ("POST", "fine_tuning/jobs", {"model": "x"}, Creation),
        ("POST", "responses", {"model": "x", "background": True}, Creation),
        ("POST", "responses", {"model": "x"}, None),
        ("GET", "batches", None, None),
        ("GET", "fine_tuning/jobs", None, None),
        ("GET", "batches/batch_1", None, Read),
        ("POST", "batches/batch_1/cancel", None, Read),
        ("GET", "batches/batch_1/cancel", None, None),
        ("GET", "fine_tuning/jobs/ftjob-1", None, Read),
        ("GET", "fine_tuning/jobs/ftjob-1/events", None, None),
        ("GET", "responses/resp_1", None, Read),
        ("GET", "responses/resp_1/input_items", None, None),
        ("DELETE", "responses/resp_1", None, None),
    ],
)
async def test_track_tells_creations_and_reads_from_other_calls(
    app: web.Application, method: str, endpoint: str, body: Any, expected: type | None
) -> None:
    tracked = await track(app, method, call_of(endpoint, body))
    assert type(tracked) is expected if expected else tracked is None


@pytest.mark.parametrize(
    ("kind", "body", "code"),
    [
        (FINE_TUNING, {"model": "untrained"}, "endpoint_not_metered"),
        (FINE_TUNING, {"model": "unknown"}, "endpoint_not_metered"),
        (FINE_TUNING, {}, "endpoint_not_metered"),
        (BATCH, {"endpoint": "/v1/images/generations", "model": MODEL}, "endpoint_not_metered"),
        (BATCH, {"endpoint": "/v1/chat/completions", "model": "unknown"}, "model_not_priced"),
        (BATCH, {"endpoint": "/v1/chat/completions", "model": ""}, "endpoint_not_metered"),
        (RESPONSE, {"model": "unknown", "background": True}, "model_not_priced"),
    ],
)
def test_what_cannot_be_priced_is_refused(kind: Any, body: dict[str, Any], code: str) -> None:
    pricing = Pricing({MODEL: RATES, "untrained": replace(RATES, training=None)})
    with pytest.raises(Exception) as refused:
        refuse_unpriced(pricing, kind, body)
    assert getattr(refused.value, "code", None) == code


def test_what_can_be_priced_passes() -> None:
    pricing = Pricing({MODEL: RATES})
    refuse_unpriced(pricing, FINE_TUNING, {"model": MODEL})
    refuse_unpriced(pricing, BATCH, {"endpoint": "/v1/embeddings", "model": MODEL})
    refuse_unpriced(pricing, RESPONSE, {"model": MODEL, "background": True})


# --- the key snapshot by id ---------------------------------------------------------------------


def test_the_snapshot_finds_keys_by_id_through_changes_and_deletion() -> None:
    first, second = new_key(), new_key()
    snapshot = KeySnapshot()
    snapshot.replace([first, second])
    assert snapshot.by_id(first.key_id) is first
    revoked = replace(first, revoked=True)
    snapshot.apply([revoked, replace(second, deleted=True)])
    assert snapshot.by_id(first.key_id) is revoked
    assert snapshot.by_id(second.key_id) is None
    assert snapshot.by_id("missing") is None


# --- the Redis record ----------------------------------------------------------------------------


@pytest.fixture
async def store(pipe: RedisPipe) -> JobStore:
    await pipe.execute([("DEL", JOBS_INDEX, LEASE)])
    return JobStore(pipe)


async def test_a_recorded_job_is_known_to_a_new_store(store: JobStore, settings: Settings) -> None:
    job = job_of(new_key(), "batch_a")
    await store.add(job)
    other = RedisPipe(settings.redis)  # another replica, or this one restarted
    try:
        assert await JobStore(other).pending(100) == [job]
        assert await JobStore(other).find("batch_a") == job
    finally:
        await other.close()


async def test_exactly_one_of_many_concurrent_claims_wins(store: JobStore) -> None:
    job = job_of(new_key(), "batch_b")
    await store.add(job)
    claims = await asyncio.gather(*(store.claim(job) for _ in range(20)))
    assert claims.count(True) == 1
    assert await store.pending(100) == []
    assert await store.find("batch_b") is None


async def test_pending_picks_at_most_its_limit(store: JobStore) -> None:
    key = new_key()
    for n in range(5):
        await store.add(job_of(key, f"batch_{n}"))
    picked = await store.pending(3)
    assert len(picked) == 3 and len({job.job_id for job in picked}) == 3
    assert len(await store.pending(10)) == 5


async def test_an_index_entry_without_its_record_is_cleared(
    store: JobStore, pipe: RedisPipe
) -> None:
    await pipe.execute([("HSET", JOBS_INDEX, "batch_orphan", "some-key")])
    assert await store.pending(100) == []
    assert await pipe.execute([("HLEN", JOBS_INDEX)]) == [0]


async def test_one_holder_leads_until_its_lease_lapses(store: JobStore) -> None:
    assert await store.lead("a", 300)
    assert not await store.lead("b", 300)
    assert await store.lead("a", 300)  # renewed
    await asyncio.sleep(0.4)
    assert await store.lead("b", 300)
    assert not await store.lead("a", 300)


async def test_a_job_created_while_redis_is_away_is_recorded_once_it_is_back(
    store: JobStore,
) -> None:
    away = RedisPipe(RedisSettings(hosts=("127.0.0.1",), port=1))
    targets = Targets(Settings(), SettingSnapshot())
    jobs = Jobs(JobStore(away), KeySnapshot(), Pricing(), None, metrics(), targets)  # type: ignore[arg-type]
    job = job_of(new_key(), "batch_late")
    with pytest.raises(OSError):
        await jobs.record(job)
    jobs.store = store
    await jobs.record_late()
    assert await store.pending(100) == [job]
    await away.close()


# --- the watcher, against the fake upstream -----------------------------------------------------


@dataclass
class World:
    key: Key
    jobs: list[Jobs]
    watchers: list[JobWatcher]
    engine: LimitEngine
    sdk: openai.AsyncOpenAI


@pytest.fixture
async def world(
    store: JobStore,
    pipe: RedisPipe,
    settings: Settings,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[World]:
    upstream = await aiohttp_server(create_fake_upstream())
    settings = replace(settings, openai_base_url=str(upstream.make_url("/v1")))
    key = new_key(cost_limit_in_usd=10)
    snapshot = KeySnapshot()
    snapshot.replace([key])
    engine = LimitEngine(pipe, 60)
    settler = Settler(engine, errors())
    flusher = asyncio.create_task(settler.run())
    pricing = Pricing({MODEL: RATES})
    # Two replicas: each its own Jobs and watcher, sharing Redis and the settlement queue.
    targets = Targets(settings, SettingSnapshot())
    jobs = [Jobs(store, snapshot, pricing, settler, metrics(), targets) for _ in range(2)]
    async with (
        aiohttp.ClientSession() as session,
        openai.AsyncOpenAI(base_url=settings.openai_base_url, api_key="x", max_retries=0) as sdk,
    ):
        watchers = [JobWatcher(each, session, targets) for each in jobs]
        yield World(key, jobs, watchers, engine, sdk)
    settler.close(within=2)
    await flusher


async def create_batch(sdk: openai.AsyncOpenAI, lines: int, polls: int) -> str:
    data = b"".join(orjson.dumps({"body": LINE}) + b"\n" for _ in range(lines))
    uploaded = await sdk.files.create(file=("in.jsonl", data), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"fake_polls": str(polls)},
    )
    return batch.id


async def spend(world: World) -> float:
    await asyncio.sleep(0.3)  # the settlement flush
    return (await world.engine.usage(world.key)).cost_usd


async def test_two_replicas_polling_at_once_charge_a_finished_batch_once(world: World) -> None:
    batch_id = await create_batch(world.sdk, lines=4, polls=2)
    await world.jobs[0].record(job_of(world.key, batch_id))
    await asyncio.gather(*(w.poll_once() for w in world.watchers))  # both see it pending
    assert await spend(world) == 0
    assert len(await world.jobs[0].store.pending(100)) == 1
    await asyncio.gather(*(w.poll_once() for w in world.watchers))  # done: both try to charge
    assert await spend(world) == pytest.approx(0.5 * 4 * LINE_COST)
    assert await world.jobs[0].store.pending(100) == []


async def test_a_job_upstream_does_not_know_is_dropped_uncharged(world: World) -> None:
    await world.jobs[0].record(job_of(world.key, "batch_gone"))
    await world.watchers[0].poll_once()
    assert await world.jobs[0].store.pending(100) == []
    assert await spend(world) == 0


async def test_a_job_of_a_deleted_key_is_dropped_uncharged(world: World) -> None:
    batch_id = await create_batch(world.sdk, lines=1, polls=0)
    await world.jobs[0].record(job_of(new_key(), batch_id))  # a key the snapshot lacks
    await world.watchers[0].poll_once()
    assert await world.jobs[0].store.pending(100) == []


async def test_only_the_lease_holder_polls(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_module, "POLL_INTERVAL", 0.05)
    batch_id = await create_batch(world.sdk, lines=2, polls=1000)
    await world.jobs[0].record(job_of(world.key, batch_id))
    polled: list[int] = [0, 0]
    for index, watcher in enumerate(world.watchers):
        original = watcher.poll_once

        async def counted(index: int = index, original: Any = original) -> None:
            polled[index] += 1
            await original()

        monkeypatch.setattr(watcher, "poll_once", counted)
    tasks = [asyncio.create_task(w.run()) for w in world.watchers]
    await asyncio.sleep(0.6)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(polled)[0] == 0 and sorted(polled)[1] >= 5


@pytest.mark.parametrize("job_id", ["..", ".", ".hidden", "-x", "a/b", ""])
def test_an_id_that_could_walk_the_upstream_path_is_no_job_id(job_id: str) -> None:
    assert JOB_ID.fullmatch(job_id) is None


@pytest.mark.parametrize("job_id", ["batch_abc123", "file-XyZ", "ftjob-1", "resp_1.2"])
def test_upstream_object_ids_are_job_ids(job_id: str) -> None:
    assert JOB_ID.fullmatch(job_id) is not None
