"""The jobs upstream bills when they finish: what each is, when it is done, what it costs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.costs import token_cost
from proxy.metering import Usage, parse_usage
from shared.jsonutil import loads_object
from shared.pricing import Rates

# The Batch API bills at half the model's rates.
BATCH_DISCOUNT = 0.5
# Batches of these endpoints report token usage; any other is not priced.
METERED_BATCH_ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
)
# Upstream's job ids; anything else is not recorded, so that no odd id reaches a polled URL.
# An upstream object id; it starts with a letter or digit, so it is never a dot segment.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    root: str  # the upstream path of the collection, which is also its creation endpoint
    object: str  # the `object` field of one of its resources
    terminal: frozenset[str]


BATCH = Kind(
    "batch", "batches", "batch", frozenset({"completed", "failed", "expired", "cancelled"})
)
FINE_TUNING = Kind(
    "fine_tuning",
    "fine_tuning/jobs",
    "fine_tuning.job",
    frozenset({"succeeded", "failed", "cancelled"}),
)
RESPONSE = Kind(
    "response",
    "responses",
    "response",
    frozenset({"completed", "incomplete", "failed", "cancelled"}),
)
KINDS = {kind.root: kind for kind in (BATCH, FINE_TUNING, RESPONSE)}
KINDS_BY_NAME = {kind.name: kind for kind in KINDS.values()}
# The endpoints that create jobs; a read or cancel of one has no body.
JOB_CREATIONS = frozenset(KINDS)


@dataclass(frozen=True, slots=True)
class Job:
    """A job a key created, as recorded until it is charged."""

    job_id: str
    key_id: str
    kind: Kind
    model: str  # what the creation named; a batch's is known once upstream has read its file
    endpoint: str  # a batch's endpoint, else ""
    request_id: str  # of the creating call
    setting_id: str = ""  # the provider setting it was created through; "": the gateway's own

    def record(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind.name,
                "model": self.model,
                "endpoint": self.endpoint,
                "request_id": self.request_id,
                "setting_id": self.setting_id,
            }
        )

    @classmethod
    def of_record(cls, job_id: str, key_id: str, record: bytes) -> Job:
        fields = orjson.loads(record)
        return cls(
            job_id,
            key_id,
            KINDS_BY_NAME[fields["kind"]],
            fields["model"],
            fields["endpoint"],
            fields["request_id"],
            fields.get("setting_id", ""),  # records written before settings existed lack it
        )


def resource_of(body: bytes) -> dict[str, Any] | None:
    """A job resource from an answer body, or None for anything else."""
    resource = loads_object(body)
    return resource if resource is not None and isinstance(resource.get("id"), str) else None


def is_finished(kind: Kind, resource: dict[str, Any]) -> bool:
    return resource.get("object") == kind.object and resource.get("status") in kind.terminal


def usage_of(kind: Kind, resource: dict[str, Any]) -> Usage:
    """What a finished job did; trained tokens count as prompt tokens."""
    if kind is FINE_TUNING:
        trained = resource.get("trained_tokens")
        return Usage(trained if isinstance(trained, int) and trained > 0 else 0)
    return parse_usage(resource.get("usage")) or Usage()


def is_priced(kind: Kind, rates: Rates) -> bool:
    return kind is not FINE_TUNING or rates.training is not None


def cost_of(kind: Kind, rates: Rates, usage: Usage) -> float:
    """USD, for rates that price the kind."""
    if kind is FINE_TUNING:
        return usage.prompt_tokens * (rates.training or 0.0)
    cost = token_cost(rates, usage)  # as the same call made at once: audio and image tokens too
    return cost * BATCH_DISCOUNT if kind is BATCH else cost
