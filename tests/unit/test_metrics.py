"""Counters and histograms as Prometheus reads them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.telemetry import MODEL_LABELS, ProxyMetrics
from shared.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition()[0].decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_add_up_per_label_values_and_unlabelled_ones_start_at_zero() -> None:
    metrics = Metrics()
    calls = metrics.counter("test_calls_total", "Calls", ("route",))
    metrics.counter("test_idle_total", "Never counted")
    calls.inc(route="a")
    calls.inc(2.5, route="a")
    calls.series(route="b").inc()
    found = samples(metrics)
    assert found[("test_calls_total", (("route", "a"),))] == 3.5
    assert found[("test_calls_total", (("route", "b"),))] == 1
    assert found[("test_idle_total", ())] == 0


def test_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    metrics = Metrics()
    seconds = metrics.histogram("test_seconds", "Time", ("route",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        seconds.observe(value, route="a")
    found = samples(metrics)
    route = (("route", "a"),)
    buckets = {le: found[("test_seconds_bucket", (("le", le), *route))] for le in ("0.1", "1.0")}
    assert buckets == {"0.1": 2, "1.0": 4}
    assert found[("test_seconds_bucket", (("le", "+Inf"), *route))] == 5
    assert found[("test_seconds_count", route)] == 5
    assert found[("test_seconds_sum", route)] == 8.65


def test_model_labels_are_bounded_whatever_names_clients_send() -> None:
    metrics = Metrics()
    proxy = ProxyMetrics.register(metrics)
    for n in range(MODEL_LABELS + 50):
        proxy.of_model(f"client-model-{n}").cost.inc(1)
    proxy.of_model("client-model-0").cost.inc(1)  # one it kept goes on under its name
    models = {
        dict(labels)["model"]
        for (name, labels) in samples(metrics)
        if name == "gateway_proxy_cost_usd_total"
    }
    assert len(models) == MODEL_LABELS + 1
    assert "other" in models and "client-model-0" in models
    assert samples(metrics)[("gateway_proxy_cost_usd_total", (("model", "other"),))] == 50
