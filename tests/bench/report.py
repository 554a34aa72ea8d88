"""The results as Markdown: every leg side by side, the ratios, and the targets met or missed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from statistics import median
from typing import Any

from tests.bench import stages
from tests.bench.scale import ScaleResult

MILLION = 1_000_000
# The leg against which each leg's added latency is measured: straight to the same upstream API.
DIRECT = "direct"
DIRECT_OF = {"anthropic": "anthropic_direct"}
DASH = "-"  # no figure


@dataclass
class LegResult:
    title: str
    latency: dict[str, Any] | None = None  # the rounds combined
    ttfb: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    round_latency: list[dict[str, Any]] = field(default_factory=list)  # each round, in order
    round_ttfb: list[dict[str, Any]] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    round_cpu_us: list[float] = field(default_factory=list)
    cpu_us_per_request: float | None = None  # server process CPU under load, median round
    rss_mb: float | None = None
    note: str = ""  # why the leg has no figures


@dataclass
class Results:
    legs: dict[str, LegResult] = field(default_factory=dict)
    scales: list[ScaleResult] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)  # by leg title
    stages: dict[str, dict[str, int]] = field(default_factory=dict)  # samples a stage, by leg


def medians_table(subject: str, measure: str, figures: dict[str, list[float]], base: str) -> str:
    """A micro-benchmark's variants: each one's median round, and what it differs from `base`'s."""
    reference = median(figures[base])
    lines = [f"| {subject} | {measure}, median round | against {base} |", "| --- | ---: | ---: |"]
    for name, values in figures.items():
        middle = median(values)
        lines.append(f"| {name} | {middle:.1f} | {middle - reference:+.1f} |")
    return "\n".join(lines)


def combined(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Sequential figures of several rounds as one: each percentile the median of the rounds',
    so that one slow spell of the machine does not stand for the whole run."""
    if not rounds:
        return None
    failures: Counter[str] = Counter()
    for figures in rounds:
        failures.update(figures.get("failures", {}))
    summary: dict[str, Any] = {
        "n": sum(int(f["n"]) for f in rounds),
        "errors": sum(int(f["errors"]) for f in rounds),
        "rounds": len(rounds),
    }
    if failures:
        summary["failures"] = dict(failures.most_common(3))
    timed = [f for f in rounds if "p50" in f]
    if timed:
        summary |= {
            "p50": median(f["p50"] for f in timed),
            "p99": median(f["p99"] for f in timed),
            "max": max(f["max"] for f in timed),
            "mean": median(f["mean"] for f in timed),
        }
    return summary


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
    ("server CPUs busy under load", lambda r: _busy(r)),
    ("failed requests (all runs)", lambda r: _errors(r)),
    ("streamed first byte p50 (ms)", lambda r: _ms(_get(r, "ttfb", "p50"))),
    ("streamed first byte p99 (ms)", lambda r: _ms(_get(r, "ttfb", "p99"))),
    ("server RSS after load (MB)", lambda r: _count(r.rss_mb)),
]


def _count(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def _busy(leg: LegResult) -> str:
    """How many CPUs the server kept busy: whether it or its load generator was the limit."""
    rps = _get(leg, "throughput", "rps")
    if rps is None or leg.cpu_us_per_request is None:
        return DASH
    return f"{rps * leg.cpu_us_per_request / MILLION:.2f}"


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _paired_loss(a: LegResult | None, b: LegResult | None) -> float | None:
    """The median over rounds of what `a` lost against `b` in the same round, in percent: the
    two legs run one after the other in each round, so a slow spell of the machine hits both."""
    if a is None or b is None or not a.round_rps or len(a.round_rps) != len(b.round_rps):
        return None
    return median((1 - x / y) * 100 for x, y in zip(a.round_rps, b.round_rps, strict=True) if y)


def _rounds(leg: LegResult | None, part: str) -> list[dict[str, Any]]:
    return getattr(leg, f"round_{part}") if leg is not None else []


def added_by_round(
    leg: LegResult | None, base: LegResult | None, part: str, name: str
) -> list[float]:
    """`leg`'s figure less `base`'s in each round: the legs of a round run one right after the
    other, so this is steadier than the difference of the two legs' medians."""
    return [
        a[name] - b[name]
        for a, b in zip(_rounds(leg, part), _rounds(base, part), strict=False)
        if name in a and name in b
    ]


def paired_added(
    leg: LegResult | None, base: LegResult | None, part: str, name: str
) -> float | None:
    """The median over rounds of what `leg` adds to `base`."""
    added = added_by_round(leg, base, part, name)
    return median(added) if added else None


def ratio_by_round(leg: LegResult | None, base: LegResult | None) -> list[float]:
    if leg is None or base is None:
        return []
    return [a / b for a, b in zip(leg.round_rps, base.round_rps, strict=False) if b]


def paired_ratio(leg: LegResult | None, base: LegResult | None) -> float | None:
    ratios = ratio_by_round(leg, base)
    return median(ratios) if ratios else None


def cpu_added_by_round(leg: LegResult | None, base: LegResult | None) -> list[float]:
    """What `leg`'s server spent a request beyond `base`'s in the same round, in percent."""
    if leg is None or base is None:
        return []
    pairs = zip(leg.round_cpu_us, base.round_cpu_us, strict=False)
    return [(a / b - 1) * 100 for a, b in pairs if b]


def checks(results: Results) -> list[Check]:
    legs = results.legs
    direct, proxy = legs.get("direct"), legs.get("proxy")
    passthrough, litellm = legs.get("passthrough"), legs.get("litellm")
    million = next((s for s in results.scales if s.keys >= MILLION), None)
    proxy_rps = _get(proxy, "throughput", "rps")
    return [
        Check(
            "added latency p50, proxy - direct",
            paired_added(proxy, direct, "latency", "p50"),
            " ms",
            "≤ 1.0 ms",
            lambda v: v <= 1.0,
        ),
        Check(
            "added latency p99, proxy - direct",
            paired_added(proxy, direct, "latency", "p99"),
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
            paired_added(proxy, direct, "ttfb", "p50"),
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
        Check(
            "OpenAI path: proxy throughput, this tree ÷ the baseline tree (median of the rounds)",
            paired_ratio(proxy, legs.get("baseline")),
            "x",
            "≥ 0.95x",
            lambda v: v >= 0.95,
        ),
        Check(
            "Anthropic path: added latency p50, proxy - direct",
            paired_added(legs.get("anthropic"), legs.get("anthropic_direct"), "latency", "p50"),
            " ms",
            "≤ 1.0 ms",
            lambda v: v <= 1.0,
        ),
        Check(
            "Redis Cluster: proxy throughput on the cluster ÷ on one Redis (median of the rounds)",
            paired_ratio(legs.get("cluster"), proxy),
            "x",
            "≥ 0.9x",
            lambda v: v >= 0.9,
        ),
        Check(
            "two windows and a user: CPU a request beyond the proxy's one window "
            "(median of the rounds)",
            _median(cpu_added_by_round(legs.get("users"), proxy)),
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
    passthrough = legs.get("passthrough")
    lines = [
        "| leg | added p50 / p99 (ms) | first-byte overhead p50 (ms) | ÷ pass-through rps |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, leg in legs.items():
        if name in (DIRECT, *DIRECT_OF.values()) or not leg.latency:
            continue
        base = legs.get(DIRECT_OF.get(name, DIRECT))
        p50 = paired_added(leg, base, "latency", "p50")
        p99 = paired_added(leg, base, "latency", "p99")
        ttfb = paired_added(leg, base, "ttfb", "p50")
        ratio = _ratio(_get(leg, "throughput", "rps"), _get(passthrough, "throughput", "rps"))
        share = DASH if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {leg.title} | {_ms(p50)} / {_ms(p99)} | {_ms(ttfb)} | {share} |")
    return "\n".join(lines)


def _at(values: list[float], index: int) -> float | None:
    return values[index] if index < len(values) else None


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def _spread(values: list[float], unit: str, digits: int = 2) -> str:
    if not values:
        return DASH
    return f"{min(values):,.{digits}f}{unit} to {max(values):,.{digits}f}{unit}"


def openai_before_after(results: Results) -> str:
    """This tree's proxy and the baseline's, round by round, each against direct."""
    legs = results.legs
    direct, head, base = legs.get("direct"), legs.get("proxy"), legs.get("baseline")
    if head is None or base is None or not head.round_rps:
        return "No baseline figures: " + (base.note if base and base.note else "not run")
    columns = {
        "added p50 (ms)": (
            added_by_round(base, direct, "latency", "p50"),
            added_by_round(head, direct, "latency", "p50"),
        ),
        "added p99 (ms)": (
            added_by_round(base, direct, "latency", "p99"),
            added_by_round(head, direct, "latency", "p99"),
        ),
        "first-byte overhead p50 (ms)": (
            added_by_round(base, direct, "ttfb", "p50"),
            added_by_round(head, direct, "ttfb", "p50"),
        ),
        "throughput (req/s)": (base.round_rps, head.round_rps),
        "CPU a request under load (µs)": (base.round_cpu_us, head.round_cpu_us),
    }
    ratios = ratio_by_round(head, base)
    cpu_added = [a - b for a, b in zip(head.round_cpu_us, base.round_cpu_us, strict=False)]
    lines = [
        "| round | "
        + " | ".join(f"{name}: before / after" for name in columns)
        + " | after ÷ before (req/s) | after - before (CPU µs) |",
        "| ---: |" + " ---: |" * (len(columns) + 2),
    ]

    def cells(pick: Callable[[list[float]], float | None]) -> str:
        parts = []
        for name, (before, after) in columns.items():
            show = _count if "µs" in name or "req/s" in name else _ms
            parts.append(f"{show(pick(before))} / {show(pick(after))}")
        ratio, cpu = pick(ratios), pick(cpu_added)
        parts.append(DASH if ratio is None else f"{ratio:.3f}x")
        parts.append(DASH if cpu is None else f"{cpu:+.0f}")
        return " | ".join(parts)

    for index in range(len(head.round_rps)):
        lines.append(f"| {index + 1} | " + cells(partial(_at, index=index)) + " |")
    lines.append("| **median** | " + cells(_median) + " |")
    noise = (
        f"Spread over the rounds: this tree ÷ baseline {_spread(ratios, 'x', 3)}, CPU a "
        f"request after - before {_spread(cpu_added, ' µs', 0)}; direct alone "
        f"{_spread(direct.round_rps if direct else [], ' req/s', 0)}."
    )
    return "\n".join([*lines, "", noise])


def anthropic_path(results: Results) -> str:
    """The anthropic path against the fake Messages API direct, round by round."""
    legs = results.legs
    leg, direct, openai = legs.get("anthropic"), legs.get("anthropic_direct"), legs.get("proxy")
    if leg is None or not leg.round_rps:
        return "No Anthropic figures: " + (leg.note if leg and leg.note else "not run")
    added = added_by_round(leg, direct, "latency", "p50")
    openai_added = added_by_round(openai, legs.get(DIRECT), "latency", "p50")
    columns = [
        ("added p50 (ms)", added, _ms),
        (
            "added p50 less the OpenAI path's (ms)",
            [a - b for a, b in zip(added, openai_added, strict=False)],
            _ms,
        ),
        ("added p99 (ms)", added_by_round(leg, direct, "latency", "p99"), _ms),
        ("streamed first-byte overhead p50 (ms)", added_by_round(leg, direct, "ttfb", "p50"), _ms),
        ("streamed first-byte overhead p99 (ms)", added_by_round(leg, direct, "ttfb", "p99"), _ms),
        ("throughput (req/s)", leg.round_rps, _count),
        ("CPU a request under load (µs)", leg.round_cpu_us, _count),
    ]
    ratios = ratio_by_round(leg, openai)
    lines = [
        "| round | " + " | ".join(name for name, _, _ in columns) + " | ÷ OpenAI proxy (req/s) |",
        "| ---: |" + " ---: |" * (len(columns) + 1),
    ]

    def cells(pick: Callable[[list[float]], float | None]) -> str:
        ratio = pick(ratios)
        shown = [show(pick(values)) for _, values, show in columns]
        return " | ".join(shown) + f" | {DASH if ratio is None else f'{ratio:.2f}x'}"

    for index in range(len(leg.round_rps)):
        lines.append(f"| {index + 1} | " + cells(partial(_at, index=index)) + " |")
    lines.append("| **median** | " + cells(_median) + " |")
    return "\n".join(lines)


def providers_section(results: Results) -> str:
    return (
        "The OpenAI path: the baseline tree's proxy (before) and this tree's (after), the same "
        "key and calls, taking turns in every round; added latency against direct in the same "
        "round.\n\n"
        + openai_before_after(results)
        + "\n\nThe Anthropic path: Messages API calls (`x-api-key`, `anthropic-version`) through "
        "the proxy's anthropic path, with a key whose one provider setting points at the fake "
        "upstream, against the fake Messages API direct in the same round.\n\n"
        + anthropic_path(results)
    )


def users_table(results: Results) -> str:
    """CPU a request under load, the proxy's key of one window and the users leg's, by round."""
    legs = results.legs
    users, proxy = legs.get("users"), legs.get("proxy")
    if users is None or proxy is None or not users.round_cpu_us:
        return "No figures: " + (users.note if users and users.note else "not run")
    added = [a - b for a, b in zip(users.round_cpu_us, proxy.round_cpu_us, strict=False)]
    percent = cpu_added_by_round(users, proxy)
    lines = [
        "| round | proxy, one window (µs) | two windows and a user (µs) | added (µs) | added (%) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]

    def cells(pick: Callable[[list[float]], float | None]) -> str:
        extra, share = pick(added), pick(percent)
        return (
            f"{_count(pick(proxy.round_cpu_us))} | {_count(pick(users.round_cpu_us))} | "
            f"{DASH if extra is None else f'{extra:+.0f}'} | "
            f"{DASH if share is None else f'{share:+.1f}%'}"
        )

    for index in range(len(users.round_cpu_us)):
        lines.append(f"| {index + 1} | " + cells(partial(_at, index=index)) + " |")
    lines.append("| **median** | " + cells(_median) + " |")
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


def stages_table(results: Results) -> str:
    """Each profiled leg's samples by stage, priced at its CPU a request under load."""
    return stages.markdown(
        {
            results.legs[name].title: (samples, results.legs[name].cpu_us_per_request)
            for name, samples in results.stages.items()
        }
    )


def markdown(results: Results, header: str) -> str:
    sections = [
        header,
        "### Legs\n\n" + legs_table(results),
        "### Against direct and the bare pass-through\n\n" + ratios_table(results),
    ]
    if results.scales:
        sections.append("### The key snapshot at scale\n\n" + scale_table(results))
    if "baseline" in results.legs or "anthropic" in results.legs:
        sections.append(
            "### Providers: the OpenAI path before and after, and the Anthropic path\n\n"
            + providers_section(results)
        )
    if "users" in results.legs:
        sections.append(
            "### Two rate windows and a user against one window\n\n" + users_table(results)
        )
    sections.append("### Targets\n\n" + targets_table(results))
    if results.stages:
        sections.append(
            "### Where the CPU goes, stage by stage (py-spy)\n\n" + stages_table(results)
        )
    sections += [
        f"### Profile under load (py-spy): {title}\n\n{text}"
        for title, text in results.profiles.items()
    ]
    return "\n\n".join(sections) + "\n"
