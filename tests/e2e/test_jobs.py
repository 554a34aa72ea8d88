"""Batches, fine-tuning jobs and background responses: charged once, when they finish."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import Gateway, Start, write_pricing
from tests.e2e.test_observability import events_of

MODEL, UNTRAINED = "priced-model", "untrained-model"
INPUT, OUTPUT, CACHED, TRAINING = 1e-4, 1e-3, 2.5e-5, 2e-4
MESSAGES = [{"role": "user", "content": "hello there friend"}]
# The fake upstream's count for one such chat line: 6 prompt and 5 completion tokens.
LINE_COST = 6 * INPUT + 5 * OUTPUT


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path,
        {
            MODEL: {
                "input_cost_per_token": INPUT,
                "output_cost_per_token": OUTPUT,
                "cache_read_input_token_cost": CACHED,
                "training_cost_per_token": TRAINING,
            },
            UNTRAINED: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT},
        },
    )


@pytest.fixture
def quick_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll upstream every 0.2 s instead of every half minute (set before the gateway starts)."""
    monkeypatch.setattr("proxy.jobs.watcher.POLL_INTERVAL", 0.2)


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def create_batch(
    client: openai.AsyncOpenAI, lines: int, model: str = MODEL, **options: Any
) -> Any:
    body = {"model": model, "messages": MESSAGES}
    requests = [
        {"custom_id": str(n), "method": "POST", "url": "/v1/chat/completions", "body": body}
        for n in range(lines)
    ]
    uploaded = await client.files.create(file=("in.jsonl", jsonl(requests)), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **options,
    )


async def training_file(client: openai.AsyncOpenAI, lines: int) -> str:
    data = jsonl([{"messages": MESSAGES}] * lines)
    return (await client.files.create(file=("train.jsonl", data), purpose="fine-tune")).id


async def job_events(gateway: Gateway, key_id: str, job_id: str) -> list[Any]:
    """The usage events of a job's charge (its request id is the job's), once one is written."""
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in await events_of(gateway.settings, key_id, 1) if r.request_id == job_id]
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def spend_after_settling(gateway: Gateway, key_id: str) -> float:
    await asyncio.sleep(0.5)  # well past the settlement flush
    return float((await gateway.spend(key_id))["costInUsd"])


async def test_batch_read_through_another_replica_is_charged_once_at_half_price(
    priced: Gateway,
) -> None:
    raw, config = await priced.create_key(costLimitInUsd=10)
    creator, reader = priced.client(raw, 0), priced.client(raw, 1)
    batch = await create_batch(creator, lines=3)
    assert (await reader.batches.retrieve(batch.id)).status == "validating"
    assert await spend_after_settling(priced, config["keyId"]) == 0
    assert (await reader.batches.retrieve(batch.id)).status == "completed"
    expected = 0.5 * 3 * LINE_COST
    assert await priced.settled_cost(config["keyId"], expected) == pytest.approx(expected)
    for client in (creator, reader):  # later reads of the finished batch charge nothing
        await client.batches.retrieve(batch.id)
    assert await spend_after_settling(priced, config["keyId"]) == pytest.approx(expected)
    events = await job_events(priced, config["keyId"], batch.id)
    assert [(e.path, e.model, e.prompt_tokens, e.completion_tokens) for e in events] == [
        (f"batches/{batch.id}", MODEL, 18, 15)
    ]
    assert events[0].cost_nano == round(expected * 1e9)


async def test_the_watcher_charges_a_batch_no_client_reads(
    quick_watcher: None, start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(replicas=2, pricing_file=pricing_file)
    raw, config = await gateway.create_key(costLimitInUsd=10)
    batch = await create_batch(gateway.client(raw), lines=2, metadata={"fake_polls": "2"})
    expected = 0.5 * 2 * LINE_COST
    assert await gateway.settled_cost(config["keyId"], expected, within=10) == pytest.approx(
        expected
    ), "the batch was never charged"
    await asyncio.sleep(1.0)  # several more polls by both replicas: still charged once
    assert (await gateway.spend(config["keyId"]))["costInUsd"] == pytest.approx(expected)
    reads = [r for r in gateway.upstream.recorded if r.path == f"/v1/batches/{batch.id}"]
    assert len(reads) == 3  # one replica polls at a time, and stops once the batch is done


async def test_cancelled_batch_is_charged_for_the_lines_it_did(priced: Gateway) -> None:
    raw, config = await priced.create_key(costLimitInUsd=10)
    client = priced.client(raw)
    batch = await create_batch(client, lines=5, metadata={"fake_polls": "1000"})
    cancelled = await client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled"
    expected = 0.5 * 2 * LINE_COST  # the fake did 2 of the 5 lines
    assert await priced.settled_cost(config["keyId"], expected) == pytest.approx(expected)


async def test_fine_tuning_is_charged_by_its_trained_tokens(priced: Gateway) -> None:
    raw, config = await priced.create_key(costLimitInUsd=10)
    client = priced.client(raw)
    job = await client.fine_tuning.jobs.create(
        model=MODEL, training_file=await training_file(client, 2), hyperparameters={"n_epochs": 2}
    )
    assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "validating_files"
    done = await client.fine_tuning.jobs.retrieve(job.id)
    assert (done.status, done.trained_tokens) == ("succeeded", 24)
    expected = 24 * TRAINING
    assert await priced.settled_cost(config["keyId"], expected) == pytest.approx(expected)


async def test_fine_tuning_without_a_training_price_is_refused_for_a_cost_limit(
    priced: Gateway,
) -> None:
    raw, _ = await priced.create_key(costLimitInUsd=10)
    client = priced.client(raw)
    file_id = await training_file(client, 1)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.fine_tuning.jobs.create(model=UNTRAINED, training_file=file_id)
    assert refused.value.code == "endpoint_not_metered"
    assert not [r for r in priced.upstream.recorded if r.path == "/v1/fine_tuning/jobs"]


async def test_fine_tuning_without_a_training_price_is_free_without_a_cost_limit(
    priced: Gateway,
) -> None:
    raw, config = await priced.create_key()
    client = priced.client(raw)
    job = await client.fine_tuning.jobs.create(
        model=UNTRAINED, training_file=await training_file(client, 1)
    )
    await client.fine_tuning.jobs.retrieve(job.id)
    assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded"
    assert await spend_after_settling(priced, config["keyId"]) == 0
    events = await job_events(priced, config["keyId"], job.id)
    assert [(e.prompt_tokens, e.cost_nano) for e in events] == [(18, 0)]


async def test_batch_of_an_unmetered_endpoint_is_refused_for_a_cost_limit(
    priced: Gateway,
) -> None:
    raw, _ = await priced.create_key(costLimitInUsd=10)
    client = priced.client(raw)
    uploaded = await client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/images/generations",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert refused.value.code == "endpoint_not_metered"
    assert not [r for r in priced.upstream.recorded if r.path == "/v1/batches"]


async def test_batch_of_an_unpriced_model_is_refused_for_a_cost_limit(priced: Gateway) -> None:
    raw, _ = await priced.create_key(costLimitInUsd=10)
    with pytest.raises(openai.BadRequestError) as refused:
        await create_batch(priced.client(raw), lines=2, model="no-such-model")
    assert refused.value.code == "model_not_priced"
    assert not [r for r in priced.upstream.recorded if r.path == "/v1/batches"]


async def test_batch_whose_model_cannot_be_read_is_refused_for_a_cost_limit(
    priced: Gateway,
) -> None:
    raw, _ = await priced.create_key(costLimitInUsd=10)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await priced.client(raw).batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert refused.value.code == "endpoint_not_metered"
    assert not [r for r in priced.upstream.recorded if r.path == "/v1/batches"]


async def test_background_response_is_charged_once_from_its_final_usage(priced: Gateway) -> None:
    raw, config = await priced.create_key(costLimitInUsd=10)
    client = priced.client(raw)
    created = await client.responses.create(model=MODEL, input="hello there", background=True)
    assert created.status == "queued"
    assert await spend_after_settling(priced, config["keyId"]) == 0  # nothing done yet
    await client.responses.retrieve(created.id)
    done = await priced.client(raw, 1).responses.retrieve(created.id)
    assert done.status == "completed"
    expected = 5 * INPUT + 5 * OUTPUT  # "hello there": 2 words + 3, and 5 words back
    assert await priced.settled_cost(config["keyId"], expected) == pytest.approx(expected)
    await client.responses.retrieve(created.id)
    assert await spend_after_settling(priced, config["keyId"]) == pytest.approx(expected)


async def test_a_streamed_background_response_is_refused_for_a_cost_limit(
    priced: Gateway,
) -> None:
    """Upstream finishes it whether the client stays or not, and it is never read as a job."""
    raw, config = await priced.create_key(costLimitInUsd=10)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await priced.client(raw).responses.create(
            model=MODEL, input="hello there", background=True, stream=True
        )
    assert refused.value.code == "endpoint_not_metered"
    assert not [r for r in priced.upstream.recorded if r.path == "/v1/responses"]
    assert await spend_after_settling(priced, config["keyId"]) == 0
