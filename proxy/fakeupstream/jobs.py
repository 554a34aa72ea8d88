"""Asynchronous jobs: batches, fine-tuning jobs and background responses.

A job is created pending and reaches its terminal form after `metadata.fake_polls` reads
(default 1: the first GET still sees it pending, the second sees it done), so that a test drives
it with the real SDK alone. `metadata.fake_outcome` picks the terminal status (batches:
`completed`, `failed`, `expired`; fine-tuning: `succeeded`, `failed`). A cancelled or expired
batch has done the first half of its lines (rounded down), a failed one none.

Usage follows the counting rule of the package docstring, line by line of the input file; a
fine-tuning job trains on the words of every message of its file, plus 3 per message, times its
`n_epochs` (default 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import orjson
from aiohttp import web

from proxy.fakeupstream.accounting import (
    cached_tokens,
    chat_prompt_tokens,
    input_tokens,
    reply_pieces,
    responses_input_tokens,
)
from proxy.fakeupstream.responses import _response_object, _response_plan, responses
from proxy.fakeupstream.state import CREATED, FAKE_UPSTREAM, JSON, FakeAPIError, FakeOptions
from proxy.fakeupstream.wire import json_response, read_json

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
DEFAULT_EPOCHS = 3


@dataclass
class FakeJob:
    current: JSON  # what a read returns while the job is pending
    final: JSON  # what it returns once done
    polls_left: int
    cancelled: JSON | None = None  # the terminal form after a cancel, where one exists

    def read(self) -> JSON:
        if self.polls_left <= 0:
            return self.current
        self.polls_left -= 1
        if self.polls_left == 0:
            self.current = self.final
        return self.current


@dataclass
class FakeJobs:
    by_id: dict[str, FakeJob] = field(default_factory=dict)


def _job_id(prefix: str) -> str:
    """Unique across fakes, since the Redis a gateway records jobs in outlives one test's fake."""
    return prefix + os.urandom(12).hex()


FAKE_JOBS = web.AppKey("fake_jobs", FakeJobs)


def _metadata(body: JSON) -> dict[str, str]:
    metadata = body.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _polls(body: JSON) -> int:
    return int(_metadata(body).get("fake_polls", 1)) + 1


def _line_bodies(request: web.Request, file_id: object) -> list[JSON]:
    stored = request.app[FAKE_UPSTREAM].files.get(str(file_id))
    if stored is None:
        raise FakeAPIError(404, f"No such File object: {file_id}", param="input_file_id")
    lines = [orjson.loads(line) for line in stored.data.splitlines() if line.strip()]
    return [line.get("body", line) for line in lines if isinstance(line, dict)]


def _line_usage(options: FakeOptions, endpoint: str, body: JSON) -> tuple[int, int, int]:
    """Prompt, completion and cached tokens of one batch line."""
    if endpoint == "/v1/embeddings":
        return input_tokens(body.get("input")), 0, 0
    if endpoint == "/v1/responses":
        prompt, cap = responses_input_tokens(body), body.get("max_output_tokens")
    elif endpoint == "/v1/completions":
        prompt, cap = input_tokens(body.get("prompt")), body.get("max_tokens")
    else:
        prompt = chat_prompt_tokens(body.get("messages") or [])
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
    return prompt, len(reply_pieces(options, cap)[0]), cached_tokens(body, prompt)


def _batch_usage(options: FakeOptions, endpoint: str, lines: list[JSON]) -> JSON:
    counted = [_line_usage(options, endpoint, line) for line in lines]
    prompt, completion = sum(c[0] for c in counted), sum(c[1] for c in counted)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": sum(c[2] for c in counted)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _batch(base: JSON, status: str, done: int, total: int, usage: JSON | None) -> JSON:
    counts = {"total": total, "completed": done, "failed": 0}
    return {**base, "status": status, "request_counts": counts, "usage": usage}


async def create_batch(request: web.Request) -> web.Response:
    state, body = request.app[FAKE_UPSTREAM], await read_json(request)
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise FakeAPIError(400, f"Unsupported batch endpoint: {endpoint}", param="endpoint")
    lines = _line_bodies(request, body.get("input_file_id"))
    base = {
        "id": _job_id("batch_"),
        "object": "batch",
        "endpoint": endpoint,
        "model": lines[0].get("model") if lines else None,
        "input_file_id": body["input_file_id"],
        "completion_window": body.get("completion_window", "24h"),
        "created_at": CREATED,
        "metadata": _metadata(body) or None,
    }
    total, half = len(lines), len(lines) // 2
    outcome = _metadata(body).get("fake_outcome", "completed")
    done = {"completed": total, "expired": half}.get(outcome, 0)
    options = state.options
    job = FakeJob(
        current=_batch(base, "validating", 0, total, None),
        final=_batch(base, outcome, done, total, _batch_usage(options, endpoint, lines[:done])),
        polls_left=_polls(body),
        cancelled=_batch(
            base, "cancelled", half, total, _batch_usage(options, endpoint, lines[:half])
        ),
    )
    request.app[FAKE_JOBS].by_id[base["id"]] = job
    return json_response(job.current)


def _epochs(body: JSON) -> int:
    epochs = (body.get("hyperparameters") or {}).get("n_epochs", DEFAULT_EPOCHS)
    return epochs if isinstance(epochs, int) else DEFAULT_EPOCHS


def _training_tokens(request: web.Request, body: JSON) -> int:
    lines = _line_bodies(request, body.get("training_file"))
    return sum(chat_prompt_tokens(line.get("messages") or []) for line in lines) * _epochs(body)


async def create_fine_tuning_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body.get("model"), str):
        raise FakeAPIError(400, "Missing required parameter: 'model'.", param="model")
    trained = _training_tokens(request, body)
    job_id = _job_id("ftjob-")
    base = {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": CREATED,
        "model": body["model"],
        "organization_id": "org-fake",
        "training_file": body["training_file"],
        "validation_file": body.get("validation_file"),
        "hyperparameters": {"n_epochs": _epochs(body)},
        "result_files": [],
        "seed": 0,
        "metadata": _metadata(body) or None,
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "trained_tokens": None,
    }
    outcome = _metadata(body).get("fake_outcome", "succeeded")
    final = {**base, "status": outcome, "finished_at": CREATED}
    if outcome == "succeeded":
        final.update(trained_tokens=trained, fine_tuned_model=f"ft:{body['model']}:fake::{job_id}")
    else:
        final["error"] = {
            "code": "invalid_training_file",
            "message": "Fake failure.",
            "param": None,
        }
    job = FakeJob(
        current={**base, "status": "validating_files"},
        final=final,
        polls_left=_polls(body),
        cancelled={**base, "status": "cancelled", "finished_at": CREATED},
    )
    request.app[FAKE_JOBS].by_id[job_id] = job
    return json_response(job.current)


async def create_response(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses: a background response becomes a job; any other is answered now."""
    body = await read_json(request)
    if body.get("background") is not True:
        return await responses(request)
    plan = replace(_response_plan(request.app[FAKE_UPSTREAM], body), response_id=_job_id("resp_"))
    final = {**plan.final(), "background": True}
    queued = _response_object(body, plan.response_id, "queued", [])
    cancelled = _response_object(body, plan.response_id, "cancelled", [])
    job = FakeJob(
        current={**queued, "background": True},
        final=final,
        polls_left=_polls(body),
        cancelled={**cancelled, "background": True},
    )
    request.app[FAKE_JOBS].by_id[plan.response_id] = job
    return json_response(job.current)


def _job(request: web.Request) -> FakeJob:
    job_id = request.match_info["job_id"]
    job = request.app[FAKE_JOBS].by_id.get(job_id)
    if job is None:
        raise FakeAPIError(404, f"No such object: {job_id}", param="id")
    return job


async def retrieve_job(request: web.Request) -> web.Response:
    return json_response(_job(request).read())


async def cancel_job(request: web.Request) -> web.Response:
    job = _job(request)
    if job.polls_left > 0 and job.cancelled is not None:
        job.current = job.final = job.cancelled
        job.polls_left = 0
    return json_response(job.current)


def add_job_routes(app: web.Application) -> None:
    app[FAKE_JOBS] = FakeJobs()
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_post("/v1/fine_tuning/jobs", create_fine_tuning_job)
    for root in ("responses", "batches", "fine_tuning/jobs"):
        app.router.add_get(f"/v1/{root}/{{job_id}}", retrieve_job)
        app.router.add_post(f"/v1/{root}/{{job_id}}/cancel", cancel_job)
