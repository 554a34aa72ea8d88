"""Metrics to Prometheus (always) and to DogStatsD (when STATSD_ADDRESS is set), under one name.

Each service owns a registry, so that apps built side by side (tests, workers) never share state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import prometheus_client as prom

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


class _Labelled:
    """Children by label values, looked up once: `labels()` costs microseconds on every call."""

    def __init__(self, parent: Any) -> None:
        self._parent = parent
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, labels: dict[str, str]) -> Any:
        if not labels:
            return self._parent
        values = tuple(labels.values())
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._parent.labels(**labels)
        return child


class Counter(_Labelled):
    def __init__(self, metrics: Metrics, name: str, doc: str, labels: Sequence[str]) -> None:
        # prometheus-client adds the _total suffix to counters itself.
        super().__init__(
            prom.Counter(name.removesuffix("_total"), doc, labels, registry=metrics.registry)
        )
        self._statsd = metrics.statsd
        self._name = name

    def inc(self, amount: float = 1, **labels: str) -> None:
        self.child(labels).inc(amount)
        if self._statsd is not None:
            self._statsd.increment(self._name, amount, tags=_tags(labels))


class Histogram(_Labelled):
    def __init__(
        self, metrics: Metrics, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(
            prom.Histogram(name, doc, labels, registry=metrics.registry, buckets=buckets)
        )
        self._statsd = metrics.statsd
        self._name = name

    def observe(self, value: float, **labels: str) -> None:
        self.child(labels).observe(value)
        if self._statsd is not None:
            self._statsd.histogram(self._name, value, tags=_tags(labels))
