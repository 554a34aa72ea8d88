"""The results as Markdown: every leg side by side, the ratios, and the targets met or missed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from tests.bench.scale import ScaleResult

MILLION = 1_000_000
DASH = "-"  # no figure


@dataclass
class LegResult:
    title: str
    latency: dict[str, Any] | None = None
    ttfb: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    round_rps: list[float] = field(default_factory=list)  # each throughput round, in order
    cpu_us_per_request: float | None = None  # server process CPU during the throughput run
    rss_mb: float | None = None
    note: str = ""  # why the leg has no figures


@dataclass
class Results:
    legs: dict[str, LegResult] = field(default_factory=dict)
    scales: list[ScaleResult] = field(default_factory=list)
    profile: str = ""


def _ms(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _get(leg: LegResult | None, part: str, name: str) -> float | None:
    figures = getattr(leg, part) if leg is not None else None
    return None if not figures else figures.get(name)


ROWS: list[tuple[str, Callable[[LegResult], str]]] = [
    ("sequential latency p50 (ms)", lambda r: _ms(_get(r, "latency", "p50"))),
    ("sequential latency p99 (ms)", lambda r: _ms(_get(r, "latency", "p99"))),
    ("throughput, median run (req/s)", lambda r: _count(_get(r, "throughput", "rps"))),
    ("latency under load p50 / p99 (ms)", lambda r: _pair(r.throughput)),
    ("server CPU per request under load (µs)", lambda r: _count(r.cpu_us_per_request)),
    ("failed requests (all runs)", lambda r: _errors(r)),
    ("streamed first byte p50 (ms)", lambda r: _ms(_get(r, "ttfb", "p50"))),
    ("streamed first byte p99 (ms)", lambda r: _ms(_get(r, "ttfb", "p99"))),
    ("server RSS after load (MB)", lambda r: _count(r.rss_mb)),
]


def _count(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def _pair(throughput: dict[str, Any] | None) -> str:
    if not throughput or throughput.get("p50") is None:
        return DASH
    return f"{throughput['p50']:.1f} / {throughput['p99']:.1f}"


def _errors(leg: LegResult) -> str:
    parts = [leg.latency, leg.ttfb, leg.throughput]
    if not any(parts):
        return DASH
    return str(sum(int(p.get("errors", 0)) for p in parts if p))


def failure(leg: LegResult) -> str:
    """The most frequent reason among the failed requests of a leg, if any failed."""
    for part in (leg.latency, leg.ttfb, leg.throughput):
        if part and part.get("failures"):
            return next(iter(part["failures"]))  # type: ignore[no-any-return]
    return ""


def legs_table(results: Results) -> str:
    legs = list(results.legs.values())
    lines = [
        "| | " + " | ".join(leg.title for leg in legs) + " |",
        "| --- |" + " ---: |" * len(legs),
    ]
    lines += [
        f"| {label} | " + " | ".join(cell(leg) for leg in legs) + " |" for label, cell in ROWS
    ]
    notes = [f"- {leg.title}: {leg.note}" for leg in legs if leg.note]
    notes += [f"- {leg.title}, a failed request: {why}" for leg in legs if (why := failure(leg))]
    return "\n".join(lines + (["", *notes] if notes else []))


@dataclass(frozen=True)
class Check:
    figure: str
    value: float | None
    unit: str
    target: str
    met: Callable[[float], bool]
    missing: str = "not measured"
    missed_when_missing: bool = False  # no figure because the thing failed, not because not run

    def row(self) -> str:
        if self.value is None:
            verdict = "**missed**" if self.missed_when_missing else "-"
            return f"| {self.figure} | {self.missing} | {self.target} | {verdict} |"
        verdict = "met" if self.met(self.value) else "**missed**"
        return f"| {self.figure} | {self.value:.2f}{self.unit} | {self.target} | {verdict} |"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _paired_loss(a: LegResult | None, b: LegResult | None) -> float | None:
    """The median over rounds of what `a` lost against `b` in the same round, in percent: the
    two legs run one after the other in each round, so a slow spell of the machine hits both."""
    if a is None or b is None or not a.round_rps or len(a.round_rps) != len(b.round_rps):
        return None
    return median((1 - x / y) * 100 for x, y in zip(a.round_rps, b.round_rps, strict=True) if y)


def checks(results: Results) -> list[Check]:
    legs = results.legs
    direct, proxy = legs.get("direct"), legs.get("proxy")
    passthrough, litellm = legs.get("passthrough"), legs.get("litellm")
    million = next((s for s in results.scales if s.keys >= MILLION), None)
    proxy_rps = _get(proxy, "throughput", "rps")
    return [
        Check(
            "added latency p50, proxy - direct",
            _diff(_get(proxy, "latency", "p50"), _get(direct, "latency", "p50")),
            " ms",
            "≤ 1.0 ms",
            lambda v: v <= 1.0,
        ),
        Check(
            "added latency p99, proxy - direct",
            _diff(_get(proxy, "latency", "p99"), _get(direct, "latency", "p99")),
            " ms",
            "≤ 3 ms",
            lambda v: v <= 3.0,
        ),
        Check(
            "throughput, proxy ÷ bare pass-through",
            _ratio(proxy_rps, _get(passthrough, "throughput", "rps")),
            "x",
            "≥ 0.8x",
            lambda v: v >= 0.8,
        ),
        Check(
            "throughput, proxy ÷ LiteLLM",
            _ratio(proxy_rps, _get(litellm, "throughput", "rps")),
            "x",
            "≥ 20x",
            lambda v: v >= 20,
        ),
        Check(
            "streamed first-byte overhead p50, proxy - direct",
            _diff(_get(proxy, "ttfb", "p50"), _get(direct, "ttfb", "p50")),
            " ms",
            "≤ 1 ms",
            lambda v: v <= 1.0,
        ),
        Check(
            "proxy RSS after load, 1k keys",
            proxy.rss_mb if proxy else None,
            " MB",
            "≤ 80 MB",
            lambda v: v <= 80,
        ),
        Check(
            "logs, metrics and events: throughput lost against the proxy with telemetry off "
            "(median of the rounds)",
            _paired_loss(proxy, legs.get("untraced")),
            "%",
            "≤ 10%",
            lambda v: v <= 10,
        ),
        *million_checks(million),
    ]


def million_checks(million: ScaleResult | None) -> list[Check]:
    missing, failed = "not run (`--scale 1000000`)", False
    load_s = None
    if million is not None:
        load_s = None if million.loaded_with else million.load_s
        failed = load_s is None
        missing = (
            f"not with the defaults; {million.load_s:.1f} s with {million.loaded_with}"
            if million.load_s is not None
            else f"never: {'; '.join(million.failures)}"
        )
    return [
        Check(
            "1M keys: proxy RSS",
            million.rss_mb if million else None,
            " MB",
            "≤ 1 GB (1024 MB)",
            lambda v: v <= 1024,
            missing,
            failed,
        ),
        Check(
            "1M keys: snapshot loaded (process start → healthy)",
            load_s,
            " s",
            "≤ 20 s",
            lambda v: v <= 20,
            missing,
            failed,
        ),
        Check(
            "1M keys: incremental refresh, 100 changed (median)",
            million.refresh_median_ms if million else None,
            " ms",
            "≤ 50 ms",
            lambda v: v <= 50,
            missing,
        ),
    ]


def targets_table(results: Results) -> str:
    lines = ["| figure | measured | target | |", "| --- | ---: | --- | --- |"]
    return "\n".join(lines + [check.row() for check in checks(results)])


def ratios_table(results: Results) -> str:
    """Every leg against direct and against the pass-through, for context."""
    legs = results.legs
    direct, passthrough = legs.get("direct"), legs.get("passthrough")
    lines = [
        "| leg | added p50 / p99 (ms) | first-byte overhead p50 (ms) | ÷ pass-through rps |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, leg in legs.items():
        if name == "direct" or not leg.latency:
            continue
        p50 = _diff(_get(leg, "latency", "p50"), _get(direct, "latency", "p50"))
        p99 = _diff(_get(leg, "latency", "p99"), _get(direct, "latency", "p99"))
        ttfb = _diff(_get(leg, "ttfb", "p50"), _get(direct, "ttfb", "p50"))
        ratio = _ratio(_get(leg, "throughput", "rps"), _get(passthrough, "throughput", "rps"))
        share = DASH if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {leg.title} | {_ms(p50)} / {_ms(p99)} | {_ms(ttfb)} | {share} |")
    return "\n".join(lines)


def scale_table(results: Results) -> str:
    lines = [
        "| keys | in-process full load (s) | proxy start → healthy (s) | proxy RSS (MB) "
        "| refresh, 100 changed: median / max (ms) "
        "| requests while 100 keys change each second: p50 / p99 / max (ms) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for s in results.scales:
        during = s.during_churn
        load = "not loaded" if s.load_s is None else f"{s.load_s:.2f}"
        if s.loaded_with:
            load += f" (with {s.loaded_with})"
        rss = "-" if s.rss_mb is None else f"{s.rss_mb:,.0f}"
        lines.append(
            f"| {s.keys:,} | {s.inprocess_load_s:.2f} | {load} | {rss} "
            f"| {s.refresh_median_ms:.1f} / {max(s.refresh_ms):.1f} "
            f"| {_ms(during.get('p50'))} / {_ms(during.get('p99'))} / {_ms(during.get('max'))} |"
        )
        notes += [f"- {s.keys:,} keys, proxy with the defaults: {f}" for f in s.failures]
        if during.get("failures"):
            notes.append(f"- {s.keys:,} keys, a failed request: {next(iter(during['failures']))}")
    return "\n".join(lines + (["", *notes] if notes else []))


def markdown(results: Results, header: str) -> str:
    sections = [
        header,
        "### Legs\n\n" + legs_table(results),
        "### Against direct and the bare pass-through\n\n" + ratios_table(results),
    ]
    if results.scales:
        sections.append("### The key snapshot at scale\n\n" + scale_table(results))
    sections.append("### Targets\n\n" + targets_table(results))
    if results.profile:
        sections.append("### Proxy profile under load (py-spy)\n\n" + results.profile)
    return "\n\n".join(sections) + "\n"
