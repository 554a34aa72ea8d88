"""The request path's part in jobs: refuse what cannot be priced, record creations, and charge a
job a client's read shows finished.

`handle` calls `track` only for the endpoints that create jobs and for calls without a body
(reads, cancels); every other call pays one set lookup for jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from proxy.calls import Call
from proxy.errors import endpoint_not_metered, model_not_priced, upstream_unreachable
from proxy.jobs.billing import JOBS, Jobs
from proxy.jobs.kinds import (
    BATCH,
    FINE_TUNING,
    JOB_ID,
    KINDS,
    METERED_BATCH_ENDPOINTS,
    RESPONSE,
    Job,
    Kind,
    is_finished,
    resource_of,
)
from proxy.paths import upstream_url
from proxy.typedefs import PRICING, SESSION
from proxy.upstream import gateway_headers
from shared.admissions import has_cost_limits
from shared.jsonutil import loads_object
from shared.pricing import Pricing

# Enough for the first request of any batch file but one carrying images or files inline.
MAX_FIRST_LINE = 1024 * 1024
FILE_READ_TIMEOUT = 30.0


@dataclass(slots=True)
class Creation:
    """A call that creates a job: recorded once upstream has answered 2xx."""

    jobs: Jobs
    kind: Kind
    call: Call
    body: dict[str, Any]

    def answered(self, response: web.StreamResponse) -> None:
        resource = _resource(response)
        if resource is None or not JOB_ID.fullmatch(resource["id"]):
            return
        # The job is billed when it finishes; the call that created it is not.
        self.call.usage = None
        model = resource.get("model") or self.body.get("model")
        endpoint = resource.get("endpoint") if self.kind is BATCH else ""
        job = Job(
            resource["id"],
            self.call.key.key_id,
            self.kind,
            model if isinstance(model, str) else "",
            endpoint if isinstance(endpoint, str) else "",
            self.call.request_id,
            self.call.target.setting_id,
        )
        self.jobs.spawn(self.jobs.record(job))


@dataclass(slots=True)
class Read:
    """A read (or cancel) of one job: its answer may show it finished."""

    jobs: Jobs
    kind: Kind
    job_id: str

    def answered(self, response: web.StreamResponse) -> None:
        resource = _resource(response)
        if resource is None or resource["id"] != self.job_id:
            return
        if self.kind is RESPONSE and resource.get("background") is not True:
            return  # an ordinary response, billed when it was made
        if is_finished(self.kind, resource):
            self.jobs.spawn(self.jobs.finished_by_id(self.kind, self.job_id, resource))


async def track(app: web.Application, method: str, call: Call) -> Creation | Read | None:
    """What this call does to a job, if anything; refuses a creation the gateway cannot price."""
    kind = KINDS.get(call.endpoint)
    if kind is not None:
        if method != "POST":
            return None
        # A body that is no JSON object creates nothing: upstream refuses it.
        body = call.payload if call.payload is not None else loads_object(call.body) or {}
        if kind is RESPONSE and body.get("background") is not True:
            return None
        if kind is RESPONSE and body.get("stream") is True and has_cost_limits(call.key):
            # Upstream goes on after the client leaves such a stream, and it is no job here.
            raise endpoint_not_metered(
                "responses", "a streamed background response is not metered (drop stream)"
            )
        if kind is BATCH and has_cost_limits(call.key):
            body = {**body, "model": await batch_model(app, call, body.get("input_file_id"))}
        if has_cost_limits(call.key):
            refuse_unpriced(app[PRICING], kind, body)
        return Creation(app[JOBS], kind, call, body)
    root, _, job_id = call.endpoint.rpartition("/")
    if job_id == "cancel" and method == "POST":
        root, _, job_id = root.rpartition("/")
    elif method != "GET":
        return None
    kind = KINDS.get(root)
    return Read(app[JOBS], kind, job_id) if kind is not None else None


def refuse_unpriced(pricing: Pricing, kind: Kind, body: dict[str, Any]) -> None:
    model = body.get("model")
    rates = pricing.rates(model) if isinstance(model, str) and model else None
    if kind is FINE_TUNING:
        if rates is None or rates.training is None:
            raise endpoint_not_metered(
                "fine_tuning/jobs", f"no training price is known for {model!r}"
            )
        return
    if kind is BATCH and body.get("endpoint") not in METERED_BATCH_ENDPOINTS:
        raise endpoint_not_metered("batches", f"{body.get('endpoint')!r} is not metered in batches")
    if kind is BATCH and not model:
        raise endpoint_not_metered(
            "batches", "the model could not be read from the first line of the input file"
        )
    if rates is None:
        raise model_not_priced(str(model))


async def batch_model(app: web.Application, call: Call, file_id: object) -> str:
    """The model of a batch, from the first line of its input file (a batch has one model)."""
    if not isinstance(file_id, str) or not JOB_ID.fullmatch(file_id):
        return ""
    target = call.target
    url = upstream_url(target.base_url, f"files/{file_id}/content", "")
    line = b""
    try:
        async with app[SESSION].get(
            url,
            headers=gateway_headers(target, file_id),
            timeout=aiohttp.ClientTimeout(total=FILE_READ_TIMEOUT),
            allow_redirects=False,
        ) as answer:
            if answer.status != 200:
                return ""
            while b"\n" not in line and len(line) < MAX_FIRST_LINE:
                chunk = await answer.content.readany()
                if not chunk:
                    break
                line += chunk
    except (TimeoutError, aiohttp.ClientError):
        raise upstream_unreachable("reading the batch's input file") from None
    request = loads_object(line.partition(b"\n")[0]) or {}
    body = request.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def _resource(response: web.StreamResponse) -> dict[str, Any] | None:
    if not 200 <= response.status < 300 or not isinstance(response, web.Response):
        return None
    body = response.body
    return resource_of(body) if isinstance(body, bytes) else None
