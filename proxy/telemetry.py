"""Stage 6, record: one log line, the metrics and the usage event of each proxied call."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from proxy.calls import Call
from shared.limits import to_usd
from shared.metrics import OVERHEAD_BUCKETS, Counter, Histogram, Metrics

log = logging.getLogger("gateway.proxy.calls")

# Path roots of the OpenAI API; anything else is "other", so that clients cannot mint labels.
API_ROOTS = frozenset(
    {
        "chat", "completions", "embeddings", "responses", "models", "moderations", "images",
        "audio", "files", "uploads", "batches", "fine_tuning", "vector_stores", "assistants",
        "threads", "realtime", "evals", "containers", "conversations",
    }
)  # fmt: skip
TWO_PART_ROOTS = frozenset({"chat", "audio", "images"})


def endpoint_label(endpoint: str) -> str:
    parts = endpoint.split("/")
    if parts[0] not in API_ROOTS:
        return "other"
    return "/".join(parts[:2]) if parts[0] in TWO_PART_ROOTS and len(parts) > 1 else parts[0]


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

    @classmethod
    def register(cls, metrics: Metrics) -> ProxyMetrics:
        return cls(
            requests=metrics.counter(
                "gateway_proxy_requests_total",
                "Proxied calls by endpoint, status and whether they streamed",
                ("endpoint", "status", "streamed"),
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


def usage_event(call: Call, cost_nano: int, latency: float) -> dict[str, str]:
    """The durable record of one call, as Redis stream fields."""
    usage = call.usage
    return {
        "event_id": os.urandom(16).hex(),
        "request_id": call.request_id,
        "key_id": call.key.key_id,
        "model": call.reported_model or call.model,
        "path": call.endpoint,
        "status": str(call.status),
        "prompt_tokens": str(usage.prompt_tokens if usage else 0),
        "completion_tokens": str(usage.completion_tokens if usage else 0),
        "cached_tokens": str(usage.cached_tokens if usage else 0),
        "cost_nano": str(cost_nano),
        "latency_ms": f"{latency * 1000:.3f}",
        "upstream_ms": f"{call.upstream_seconds * 1000:.3f}",
        "streamed": "1" if call.streamed else "0",
        "time": f"{time.time():.6f}",
    }


def record_call(
    metrics: ProxyMetrics,
    request_id: str,
    path: str,
    call: Call | None,
    outcome: tuple[int, str],
    latency: float,
    cost_nano: int,
) -> None:
    """Metrics and the log line; `outcome` is the status and, for a refusal, its code."""
    status, refusal = outcome
    endpoint = endpoint_label(call.endpoint) if call is not None else "other"
    streamed = "1" if call is not None and call.streamed else "0"
    metrics.requests.inc(endpoint=endpoint, status=str(status), streamed=streamed)
    metrics.duration.observe(latency, endpoint=endpoint)
    if refusal:
        metrics.refusals.inc(reason=refusal)
    upstream = call.upstream_seconds if call is not None else 0.0
    if call is not None and call.upstream_started:
        metrics.upstream.observe(upstream, endpoint=endpoint)
        metrics.overhead.observe(max(0.0, latency - upstream), endpoint=endpoint)
    usage = call.usage if call is not None and 200 <= status < 300 else None
    model = (call.reported_model or call.model) if call is not None else ""
    if usage is not None:
        metrics.tokens.inc(usage.prompt_tokens, model=model, kind="prompt")
        metrics.tokens.inc(usage.completion_tokens, model=model, kind="completion")
        metrics.cost.inc(to_usd(cost_nano), model=model)
    log.info(
        "call",
        extra={
            "request_id": request_id,
            "key_id": call.key.key_id if call is not None else "",
            "model": model,
            "path": path,
            "status": status,
            "refusal": refusal,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cost_usd": to_usd(cost_nano),
            "upstream_ms": round(upstream * 1000, 3),
            "overhead_ms": round(max(0.0, latency - upstream) * 1000, 3),
            "streamed": call.streamed if call is not None else False,
        },
    )
