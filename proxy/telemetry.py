"""Stage 6, record: one log line, the metrics and the usage event of each proxied call."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy.calls import Call
from proxy.requestlog import logged_contents
from shared.limit_keys import to_usd
from shared.logs import HotLog
from shared.metrics import OVERHEAD_BUCKETS, Counter, Histogram, Metrics, Series


def call_log(log_format: str) -> HotLog:
    return HotLog(logging.getLogger("gateway.proxy.calls"), log_format)


# Path roots of the OpenAI API; anything else is "other", so that clients cannot mint labels.
API_ROOTS = frozenset(
    {
        "chat", "completions", "embeddings", "responses", "models", "moderations", "images",
        "audio", "files", "uploads", "batches", "fine_tuning", "vector_stores", "assistants",
        "threads", "realtime", "evals", "containers", "conversations",
    }
)  # fmt: skip
TWO_PART_ROOTS = frozenset({"chat", "audio", "images"})
MODEL_LABELS = 256  # distinct model label values kept; the rest count under "other"


def endpoint_label(endpoint: str) -> str:
    root, slash, rest = endpoint.partition("/")
    if root not in API_ROOTS:
        return "other"
    if root in TWO_PART_ROOTS and slash:
        return f"{root}/{rest.partition('/')[0]}"
    return root


@dataclass(frozen=True, slots=True)
class CallSeries:
    """The series one kind of call (endpoint, status, streamed) updates."""

    requests: Series
    duration: Series
    upstream: Series
    overhead: Series


@dataclass(frozen=True, slots=True)
class ModelSeries:
    prompt_tokens: Series
    completion_tokens: Series
    cost: Series


@dataclass(frozen=True)
class ProxyMetrics:
    requests: Counter
    duration: Histogram
    upstream: Histogram
    overhead: Histogram
    tokens: Counter
    cost: Counter
    refusals: Counter
    unpriced: Counter
    redis_errors: Counter
    postgres_errors: Counter
    _calls: dict[tuple[str, str, int, bool], CallSeries] = field(default_factory=dict)
    _models: dict[str, ModelSeries] = field(default_factory=dict)

    def of_call(self, provider: str, endpoint: str, status: int, streamed: bool) -> CallSeries:
        found = self._calls.get((provider, endpoint, status, streamed))
        if found is None:
            found = self._calls[provider, endpoint, status, streamed] = CallSeries(
                self.requests.series(
                    provider=provider,
                    endpoint=endpoint,
                    status=str(status),
                    streamed="1" if streamed else "0",
                ),
                self.duration.series(endpoint=endpoint),
                self.upstream.series(endpoint=endpoint),
                self.overhead.series(endpoint=endpoint),
            )
        return found

    def model_label(self, model: str) -> str:
        """The model as a label value: clients name models freely, so past a bound "other"."""
        if model in self._models or len(self._models) < MODEL_LABELS:
            return model or "unknown"
        return "other"

    def of_model(self, model: str) -> ModelSeries:
        model = self.model_label(model)
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelSeries(
                self.tokens.series(model=model, kind="prompt"),
                self.tokens.series(model=model, kind="completion"),
                self.cost.series(model=model),
            )
        return found

    @classmethod
    def register(cls, metrics: Metrics) -> ProxyMetrics:
        return cls(
            requests=metrics.counter(
                "gateway_proxy_requests_total",
                "Proxied calls by provider, endpoint, status and whether they streamed",
                ("provider", "endpoint", "status", "streamed"),
            ),
            duration=metrics.histogram(
                "gateway_proxy_request_seconds", "Whole time of a proxied call", ("endpoint",)
            ),
            upstream=metrics.histogram(
                "gateway_proxy_upstream_seconds", "Time spent waiting on upstream", ("endpoint",)
            ),
            overhead=metrics.histogram(
                "gateway_proxy_overhead_seconds",
                "Time in the gateway outside the upstream call",
                ("endpoint",),
                buckets=OVERHEAD_BUCKETS,
            ),
            tokens=metrics.counter(
                "gateway_proxy_tokens_total", "Tokens billed, by model and kind", ("model", "kind")
            ),
            cost=metrics.counter(
                "gateway_proxy_cost_usd_total", "USD billed, by model", ("model",)
            ),
            refusals=metrics.counter(
                "gateway_proxy_refusals_total", "Requests the gateway answered itself", ("reason",)
            ),
            unpriced=metrics.counter(
                "gateway_proxy_unpriced_calls_total",
                "Calls to models with no known price",
                ("model",),
            ),
            redis_errors=metrics.counter(
                "gateway_redis_errors_total", "Failed Redis operations", ("operation",)
            ),
            postgres_errors=metrics.counter(
                "gateway_postgres_errors_total", "Failed Postgres operations", ("operation",)
            ),
        )


def usage_event(call: Call, cost_nano: int, latency: float) -> bytes:
    """The durable record of one call, as JSON: the one field of its Redis stream entry. What
    only some calls have is there only when they have it, so the others' events stay small."""
    usage = call.usage
    event: dict[str, Any] = {
        "event_id": os.urandom(16).hex(),
        "request_id": call.request_id,
        "key_id": call.key.key_id,
        "model": call.reported_model or call.model,
        "path": call.endpoint,
        "status": call.status,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "cache_creation_tokens": usage.cache_creation_tokens if usage else 0,
        "cost_nano": cost_nano,
        "latency_ms": round(latency * 1000, 3),
        "upstream_ms": round(call.upstream_seconds * 1000, 3),
        "streamed": call.streamed,
        "time": time.time(),
        "provider": call.target.provider.name,
        "setting_id": call.target.setting_id,
    }
    screening = call.screening
    if screening is not None:  # what the key's policy did: counts by entity type, no value
        event.update(
            policy_id=screening.policy_id,
            policy_action=screening.action,
            policy_counts=screening.counts,
        )
    if call.custom_id:
        event["custom_id"] = call.custom_id
    if call.user_id:
        event["user_id"] = call.user_id
    if call.metadata:
        event["metadata"] = orjson.Fragment(call.metadata)
    if call.key.should_log_request or call.key.should_log_response:
        event.update(logged_contents(call))
    if call.route is not None:
        event.update(call.route.fields())
    return orjson.dumps(event)


def record_call(
    metrics: ProxyMetrics,
    call_log: HotLog,
    request_id: str,
    request: web.Request,
    provider: str,
    call: Call | None,
    outcome: tuple[int, str],
    latency: float,
    cost_nano: int,
) -> None:
    """Metrics and the log line; `outcome` is the status and, for a refusal, its code."""
    status, refusal = outcome
    # A call refused before it was read (no key, say) is labelled by its path all the same.
    endpoint = endpoint_label(
        call.endpoint if call is not None else request.match_info.get("tail", "").strip("/")
    )
    series = metrics.of_call(provider, endpoint, status, call is not None and call.streamed)
    series.requests.inc()
    series.duration.observe(latency)
    if refusal:
        metrics.refusals.inc(reason=refusal)
    upstream = call.upstream_seconds if call is not None else 0.0
    overhead = max(0.0, latency - upstream)
    if call is not None and call.upstream_started:
        series.upstream.observe(upstream)
        series.overhead.observe(overhead)
    usage = call.usage if call is not None and 200 <= status < 300 else None
    model = (call.reported_model or call.model) if call is not None else ""
    cost_usd = to_usd(cost_nano)
    if usage is not None:
        by_model = metrics.of_model(model)
        by_model.prompt_tokens.inc(usage.prompt_tokens)
        by_model.completion_tokens.inc(usage.completion_tokens)
        by_model.cost.inc(cost_usd)
    call_log.info(
        "call",
        {
            "request_id": request_id,
            "key_id": call.key.key_id if call is not None else "",
            "provider": provider,
            "setting_id": call.target.setting_id if call is not None else "",
            "model": model,
            "path": request.path,
            "status": status,
            "refusal": refusal,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cost_usd": cost_usd,
            "upstream_ms": round(upstream * 1000, 3),
            "overhead_ms": round(overhead * 1000, 3),
            "streamed": call.streamed if call is not None else False,
        },
    )
