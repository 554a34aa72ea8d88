"""The fake upstream's asynchronous jobs, through the real openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from proxy.fakeupstream import create_fake_upstream

# 3 words + 3 for the message: 6 prompt tokens, 5 completion tokens each.
LINE_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there friend"}],
}


@pytest.fixture
async def sdk(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[openai.AsyncOpenAI]:
    server = await aiohttp_server(create_fake_upstream())
    base_url = f"http://127.0.0.1:{server.port}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        yield client


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def batch_file(sdk: openai.AsyncOpenAI, count: int) -> str:
    lines = [
        {"custom_id": str(n), "method": "POST", "url": "/v1/chat/completions", "body": LINE_BODY}
        for n in range(count)
    ]
    uploaded = await sdk.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return uploaded.id


async def test_batch_completes_on_the_second_read_with_its_usage(sdk: openai.AsyncOpenAI) -> None:
    file_id = await batch_file(sdk, 3)
    batch = await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert (batch.status, batch.usage, batch.model) == ("validating", None, "gpt-4o-mini")
    assert (await sdk.batches.retrieve(batch.id)).status == "validating"
    done = await sdk.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (18, 15)


async def test_cancelled_batch_did_half_its_lines(sdk: openai.AsyncOpenAI) -> None:
    file_id = await batch_file(sdk, 5)
    batch = await sdk.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"fake_polls": "100"},
    )
    cancelled = await sdk.batches.cancel(batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.usage is not None
    assert (cancelled.usage.input_tokens, cancelled.usage.output_tokens) == (12, 10)
    assert (await sdk.batches.retrieve(batch.id)).status == "cancelled"


async def test_fine_tuning_job_reports_trained_tokens(sdk: openai.AsyncOpenAI) -> None:
    lines = [{"messages": LINE_BODY["messages"]}] * 2
    uploaded = await sdk.files.create(file=("train.jsonl", jsonl(lines)), purpose="fine-tune")
    job = await sdk.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 2},
        metadata={"fake_polls": "2"},
    )
    assert (job.status, job.trained_tokens) == ("validating_files", None)
    statuses = [(await sdk.fine_tuning.jobs.retrieve(job.id)).status for _ in range(3)]
    assert statuses == ["validating_files", "validating_files", "succeeded"]
    assert (await sdk.fine_tuning.jobs.retrieve(job.id)).trained_tokens == 2 * 6 * 2


async def test_failed_fine_tuning_job_trained_nothing(sdk: openai.AsyncOpenAI) -> None:
    uploaded = await sdk.files.create(file=("train.jsonl", jsonl([LINE_BODY])), purpose="fine-tune")
    job = await sdk.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=uploaded.id, metadata={"fake_outcome": "failed"}
    )
    await sdk.fine_tuning.jobs.retrieve(job.id)
    failed = await sdk.fine_tuning.jobs.retrieve(job.id)
    assert (failed.status, failed.trained_tokens) == ("failed", None)


async def test_background_response_completes_with_usage(sdk: openai.AsyncOpenAI) -> None:
    created = await sdk.responses.create(model="gpt-4o-mini", input="hello there", background=True)
    assert (created.status, created.background, created.usage) == ("queued", True, None)
    await sdk.responses.retrieve(created.id)
    done = await sdk.responses.retrieve(created.id)
    assert (done.status, done.output_text) == ("completed", "Hello from the fake upstream.")
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (5, 5)


async def test_unknown_job_is_a_404(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk.batches.retrieve("batch_missing")
