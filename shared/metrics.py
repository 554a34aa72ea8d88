"""Metrics to Prometheus (always) and to DogStatsD (when STATSD_ADDRESS is set), under one name.

Each service owns a registry, so that apps built side by side (tests, workers) never share state.
Counters and histograms keep their values in plain attributes and hand them to prometheus-client
at scrape time: its own metric objects take a lock on every change, which a single-threaded
event loop does not need, and cost the proxy several µs a call (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from shared.config import ConfigError

if TYPE_CHECKING:
    from datadog.dogstatsd import DogStatsd

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


def _statsd_client(address: str) -> DogStatsd | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"STATSD_ADDRESS: expected host:port, got {address!r}")
    from datadog.dogstatsd import DogStatsd  # about 6 MB resident: only when it is asked for

    return DogStatsd(host=host, port=int(port), disable_telemetry=True)


def _tags(labels: dict[str, str]) -> list[str]:
    return [f"{name}:{value}" for name, value in labels.items()]


class Metrics:
    def __init__(self, statsd_address: str = "") -> None:
        self.registry = prom.CollectorRegistry()
        self.statsd = _statsd_client(statsd_address)
        self._gauges: list[tuple[str, Callable[[], float]]] = []

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self, name, doc, labels)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(self, name, doc, labels, buckets)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time (Prometheus) and at each `report_gauges` (statsd)."""
        prom.Gauge(name, doc, registry=self.registry).set_function(read)
        self._gauges.append((name, read))

    def report_gauges(self) -> None:
        if self.statsd is not None:
            for name, read in self._gauges:
                self.statsd.gauge(name, read())

    def exposition(self) -> tuple[bytes, str]:
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self.statsd is not None:
            self.statsd.close_socket()


class Series:
    """The value of a metric for one set of label values, with its statsd tags. Kept by the
    metric, so that a hot path can look it up once and update it directly."""

    __slots__ = ("_bounds", "_name", "_statsd", "_tags", "counts", "total")

    def __init__(
        self, metric: _Metric, statsd: DogStatsd | None, tags: list[str], bounds: Sequence[float]
    ) -> None:
        self._name = metric.name
        self._statsd = statsd
        self._tags = tags
        self._bounds = bounds
        self.total = 0.0  # a counter's value; a histogram's sum
        self.counts = [0] * (len(bounds) + 1)  # a histogram's observations per bucket, +Inf last

    def inc(self, amount: float = 1) -> None:
        self.total += amount
        if self._statsd is not None:
            self._statsd.increment(self._name, amount, tags=self._tags)

    def observe(self, value: float) -> None:
        self.total += value
        self.counts[bisect_left(self._bounds, value)] += 1  # buckets are "less or equal"
        if self._statsd is not None:
            self._statsd.histogram(self._name, value, tags=self._tags)


class _Metric(Collector):
    def __init__(
        self,
        metrics: Metrics,
        name: str,
        doc: str,
        labels: Sequence[str],
        bounds: Sequence[float] = (),
    ) -> None:
        self.name = name
        self._doc = doc
        self._labels = list(labels)
        self._bounds = bounds
        self._statsd = metrics.statsd
        self._series: dict[tuple[str, ...], Series] = {}
        if not labels:
            self.series()  # shown from the start, at zero
        metrics.registry.register(self)

    def series(self, **labels: str) -> Series:
        values = tuple(labels.values())
        found = self._series.get(values)
        if found is None:
            found = Series(self, self._statsd, _tags(labels), self._bounds)
            self._series[values] = found
        return found


class Counter(_Metric):
    def inc(self, amount: float = 1, **labels: str) -> None:
        self.series(**labels).inc(amount)

    def collect(self) -> Iterator[Metric]:
        # prometheus-client adds the _total suffix to counters itself.
        family = CounterMetricFamily(
            self.name.removesuffix("_total"), self._doc, labels=self._labels
        )
        for values, series in self._series.items():
            family.add_metric(values, series.total)
        yield family


class Histogram(_Metric):
    def observe(self, value: float, **labels: str) -> None:
        self.series(**labels).observe(value)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self._doc, labels=self._labels)
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        for values, series in self._series.items():
            cumulative = list(accumulate(series.counts))
            family.add_metric(values, list(zip(bounds, cumulative, strict=True)), series.total)
        yield family
