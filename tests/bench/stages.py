"""Where a request's CPU goes, stage by stage: each sample of a py-spy profile (the collapsed
stacks `pyspy.record` writes) is given to one stage of the request path, and a stage's share of
the samples, times the leg's CPU a request, is what that stage costs a request.

    python -m tests.bench.stages .local/bench/proxy-profile.txt --cpu-us 282

A sample belongs to the stage of the frame nearest its leaf that a rule names. Helpers with no
stage of their own (aiohttp's stream reader and writer, its payloads and HTTP parser, asyncio's
tasks and timeouts, the pricing, token counting) count for whichever stage called them: a
socket write is the HTTP server's when the server's answer makes it, the upstream exchange's
when the request to upstream does, and the C time spent inside it, which py-spy shows as the
calling Python frame's, goes with it. A frame's function rule comes before its file's. Samples
that no rule claims are "other".
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from tests.bench.pyspy import stacks

HTTP_SERVER = "HTTP server"
PIPELINE = "the call and the pipeline's own steps"
AUTHENTICATION = "authentication"
VETTING = "access and policy vetting"
ADMISSION = "admission"
UPSTREAM = "upstream exchange"
METERING = "metering"
SETTLEMENT = "settlement"
TELEMETRY = "log line and telemetry"
REDIS = "Redis pipe I/O"
SNAPSHOT = "snapshots refreshed (background)"
GC = "garbage collection"
EVENT_LOOP = "event loop and socket I/O"
OTHER = "other"
STAGES = (
    HTTP_SERVER,
    PIPELINE,
    AUTHENTICATION,
    VETTING,
    ADMISSION,
    UPSTREAM,
    METERING,
    SETTLEMENT,
    TELEMETRY,
    REDIS,
    SNAPSHOT,
    GC,
    EVENT_LOOP,
    OTHER,
)


def _each(file: str, stage: str, *functions: str) -> dict[str, str]:
    return {f"{function} ({file})": stage for function in functions}


FUNCTIONS = {
    **_each(
        "proxy/forward.py",
        PIPELINE,
        *("handle", "handler_of.<locals>.handle_call", "finish", "request_id_of", "read_body"),
        *("forward_past_the_client", "outliving_the_client", "forward_and_track"),
    ),
    **_each(
        "proxy/forward.py",
        UPSTREAM,
        *("forward", "open_upstream", "read_answer", "relay", "request_timeout"),
        *("add_rate_limit_headers", "check_credential"),
    ),
    **_each("proxy/forward.py", METERING, "relay_metered", "take_stream_usage", "counted_answer"),
    **_each("proxy/forward.py", SETTLEMENT, "charge"),
    **_each("passthrough.py", UPSTREAM, "forward"),  # the bench's pass-through, as py-spy names it
    **_each("proxy/snapshot.py", AUTHENTICATION, "KeySnapshot.get"),
    **_each("shared/models.py", AUTHENTICATION, "hash_key"),
    **_each("proxy/targets.py", VETTING, "require_model_allowed"),
    **_each(
        "shared/limits.py",
        ADMISSION,
        *("LimitEngine.admit", "LimitEngine.admit_call", "LimitEngine.user_admit_call"),
        *("LimitEngine._admit_apart", "LimitEngine._take_back", "LimitEngine._queued"),
        *("LimitEngine._send_waiting", "LimitEngine._admit_batch", "LimitEngine.key_args"),
        *("LimitEngine.user_args", "LimitEngine._reservation_id"),
    ),
    **_each("shared/limits.py", SETTLEMENT, "LimitEngine.settle"),
    # The loop's own frame: what runs there and not in a callback is uvloop's C code.
    **_each("aiohttp/web.py", EVENT_LOOP, "run_app"),
}
# Native frames (py-spy --native), whatever library holds them.
NATIVE_FUNCTIONS = {"gc_collect_main": GC}
# By file, the first prefix that matches.
FILES = (
    ("aiohttp/web_", HTTP_SERVER),  # protocol, app, router, request, response, server
    ("proxy/calls.py", PIPELINE),
    ("proxy/targets.py", PIPELINE),
    ("proxy/auth.py", AUTHENTICATION),
    ("proxy/access.py", VETTING),
    ("proxy/users.py", VETTING),
    ("proxy/policies/snapshot.py", SNAPSHOT),
    ("proxy/policies/", VETTING),
    ("proxy/admission.py", ADMISSION),
    ("proxy/fallback.py", ADMISSION),
    ("shared/admissions.py", ADMISSION),
    ("aiohttp/client", UPSTREAM),  # client.py, client_reqrep.py, client_proto.py
    ("aiohttp/connector.py", UPSTREAM),
    ("proxy/upstream.py", UPSTREAM),
    ("proxy/paths.py", UPSTREAM),
    ("proxy/metering.py", METERING),
    ("proxy/anthropic_metering.py", METERING),
    ("proxy/settlement.py", SETTLEMENT),
    ("shared/limit_batches.py", SETTLEMENT),
    ("proxy/telemetry.py", TELEMETRY),
    ("shared/logs.py", TELEMETRY),
    ("shared/metrics.py", TELEMETRY),
    ("logging/", TELEMETRY),
    ("shared/redispipe.py", REDIS),
    ("shared/clusterpipe.py", REDIS),
    ("shared/slotmap.py", REDIS),
    ("proxy/snapshot.py", SNAPSHOT),
    ("proxy/changefeed.py", SNAPSHOT),
    ("proxy/provider_settings.py", SNAPSHOT),
    ("asyncpg/", SNAPSHOT),  # the proxy reads Postgres only to refresh its snapshots
    ("asyncio/base_events.py", EVENT_LOOP),  # without uvloop
    ("asyncio/selector_events.py", EVENT_LOOP),
    ("selectors.py", EVENT_LOOP),
)


def stage_of_frame(frame: str) -> str | None:
    """The stage a frame `function (file)` names, if any."""
    if frame in FUNCTIONS:
        return FUNCTIONS[frame]
    function, _, file = frame.partition(" (")
    if function in NATIVE_FUNCTIONS:
        return NATIVE_FUNCTIONS[function]
    return next((stage for prefix, stage in FILES if file.startswith(prefix)), None)


def stage_of(frames: list[str]) -> str:
    """The stage of a sample whose stack is `frames`, root first."""
    named = (stage_of_frame(frame) for frame in reversed(frames))
    return next((stage for stage in named if stage is not None), OTHER)


def classify(raw: Path) -> Counter[str]:
    """Samples a stage, of a collapsed-stack profile."""
    samples: Counter[str] = Counter()
    for frames, count in stacks(raw):
        samples[stage_of(frames)] += count
    return samples


Samples = Mapping[str, int]  # samples a stage


def shares(samples: Samples) -> dict[str, float]:
    """Each stage's fraction of the samples, in the order of STAGES."""
    total = sum(samples.values())
    return {stage: samples[stage] / total for stage in STAGES if stage in samples}


def markdown(legs: Mapping[str, tuple[Samples, float | None]]) -> str:
    """One table, a column for each leg (title: its samples, its CPU µs a request)."""
    head = "| stage | " + " | ".join(f"{title}: % / µs a request" for title in legs) + " |"
    lines = [head, "| --- |" + " ---: |" * len(legs)]
    fractions = [(shares(samples), cpu_us) for samples, cpu_us in legs.values()]

    def cell(fraction: float | None, cpu_us: float | None) -> str:
        if fraction is None:
            return "-"  # not a stage of this leg's server
        return f"{100 * fraction:.1f}" + ("" if cpu_us is None else f" / {fraction * cpu_us:.0f}")

    for stage in STAGES:
        if any(stage in of_leg for of_leg, _ in fractions):
            cells = [cell(of_leg.get(stage), cpu_us) for of_leg, cpu_us in fractions]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    totals = [
        f"100 / {'-' if cpu_us is None else f'{cpu_us:.0f}'} ({sum(samples.values())} samples)"
        for samples, cpu_us in legs.values()
    ]
    lines.append("| **all** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="collapsed stacks, e.g. from --profile")
    parser.add_argument("--cpu-us", type=float, help="the leg's server CPU a request (µs)")
    args = parser.parse_args()
    print(markdown({args.profile.stem: (classify(args.profile), args.cpu_us)}))


if __name__ == "__main__":
    main()
