"""The request path's part in jobs: refuse what cannot be priced, record creations, and charge a
job a client's read shows finished.

`handle` calls `track` only for endpoints under JOB_PATHS; every other call pays one
`str.startswith` for jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.calls import Call
from proxy.errors import ProxyError
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
from proxy.typedefs import PRICING
from shared.limits import has_cost_limits
from shared.pricing import Pricing


def endpoint_not_metered(message: str) -> ProxyError:
    return ProxyError(403, message, "invalid_request_error", "endpoint_not_metered")


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
        )
        self.jobs.spawn(self.jobs.store.add(job))


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


def track(app: web.Application, method: str, call: Call) -> Creation | Read | None:
    """What this call does to a job, if anything; refuses a creation the gateway cannot price."""
    kind = KINDS.get(call.endpoint)
    if kind is not None:
        if method != "POST":
            return None
        body = call.payload if call.payload is not None else _json(call.body)
        if kind is RESPONSE and body.get("background") is not True:
            return None
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
    if kind is FINE_TUNING:
        model = body.get("model")
        rates = pricing.rates(model) if isinstance(model, str) else None
        if rates is None or rates.training is None:
            raise endpoint_not_metered(
                f"fine-tuning {model!r} has no known training price, so a key with a cost "
                "limit cannot start it"
            )
    elif kind is BATCH and body.get("endpoint") not in METERED_BATCH_ENDPOINTS:
        raise endpoint_not_metered(
            f"batches of {body.get('endpoint')!r} are not metered, so a key with a cost limit "
            "cannot create them"
        )


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}  # upstream refuses it; nothing is created
    return parsed if isinstance(parsed, dict) else {}


def _resource(response: web.StreamResponse) -> dict[str, Any] | None:
    if not 200 <= response.status < 300 or not isinstance(response, web.Response):
        return None
    body = response.body
    return resource_of(body) if isinstance(body, bytes) else None
