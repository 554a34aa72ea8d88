"""The benchmark's stage table: each rule gives a hand-made sample to its stage, the frame
nearest the leaf decides, and the shares of a profile add up to all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import stages

LOOP = ["<module> (proxy/__main__.py)", "run_app (aiohttp/web.py)"]
SERVER = [
    *LOOP,
    "RequestHandler._handle_request (aiohttp/web_protocol.py)",
    "Application._handle (aiohttp/web_app.py)",
]
HANDLE = [
    *SERVER,
    "handler_of.<locals>.handle_call (proxy/forward.py)",
    "handle (proxy/forward.py)",
]
FORWARD = [*LOOP, "forward_and_track (proxy/forward.py)", "forward (proxy/forward.py)"]
WRITE = [
    "StreamWriter.write (aiohttp/http_writer.py)",
    "StreamWriter._writelines (aiohttp/http_writer.py)",
]

# A stack for each stage, most ending in a helper of no stage of its own, as real ones do.
STACKS = {
    stages.HTTP_SERVER: [*SERVER, "Response.write_eof (aiohttp/web_response.py)", *WRITE],
    stages.PIPELINE: [*HANDLE, "new_call (proxy/calls.py)", "loads_object (shared/jsonutil.py)"],
    stages.AUTHENTICATION: [*HANDLE, "authenticate (proxy/auth.py)", "hash_key (shared/models.py)"],
    stages.VETTING: [*HANDLE, "vet (proxy/access.py)", "check_rules (proxy/access.py)"],
    stages.ADMISSION: [
        *HANDLE,
        "reservation_nano (proxy/admission.py)",
        "most_usd (proxy/costs.py)",
    ],
    stages.UPSTREAM: [
        *LOOP,
        "ClientRequest.write_bytes (aiohttp/client_reqrep.py)",
        "BytesPayload.write_with_length (aiohttp/payload.py)",
        *WRITE,
    ],
    stages.METERING: [
        *FORWARD,
        "read_answer (proxy/forward.py)",
        "usage_of_body (proxy/metering.py)",
    ],
    stages.SETTLEMENT: [*HANDLE, "charge (proxy/forward.py)", "cost_usd (proxy/costs.py)"],
    stages.TELEMETRY: [
        *HANDLE,
        "record_call (proxy/telemetry.py)",
        "Logger.info (logging/__init__.py)",
    ],
    stages.REDIS: [
        *LOOP,
        "LimitEngine._admit_batch (shared/limits.py)",
        "RedisPipe.replies (shared/redispipe.py)",
        "Timeout.__aenter__ (asyncio/timeouts.py)",
    ],
    stages.SNAPSHOT: [
        *LOOP,
        "SnapshotRefresher.run (proxy/snapshot.py)",
        "Connection._do_execute (asyncpg/connection.py)",
    ],
    stages.GC: [
        *HANDLE,
        "new_call (proxy/calls.py)",
        "gc_collect_main (libpython3.11.so.1.0)",
        "munmap (libc.so.6)",
    ],
    stages.EVENT_LOOP: [*LOOP, "shield.<locals>._inner_done_callback (asyncio/tasks.py)"],
    stages.OTHER: ["Thread._bootstrap (threading.py)", "Thread.run (threading.py)"],
}


@pytest.mark.parametrize("stage", list(STACKS))
def test_each_rule_gives_its_sample_to_its_stage(stage: str) -> None:
    assert stages.stage_of(STACKS[stage]) == stage


def test_the_frame_nearest_the_leaf_decides() -> None:
    # The proxy's response is built in its forward: that is the server's code, not the exchange's.
    built = [*FORWARD, "Response.__init__ (aiohttp/web_response.py)"]

    assert stages.stage_of(built) == stages.HTTP_SERVER
    assert stages.stage_of(FORWARD) == stages.UPSTREAM


def test_a_profiles_shares_add_up_to_all_its_samples(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    process = 'process 1:"python -m proxy"'  # py-spy's first frame, dropped
    lines = [";".join([process, *stack]) + f" {n + 1}" for n, stack in enumerate(STACKS.values())]
    raw.write_text("\n".join(lines) + "\n")

    samples = stages.classify(raw)
    shares = stages.shares(samples)

    assert samples == {stage: n + 1 for n, stage in enumerate(STACKS)}
    assert list(shares) == list(stages.STAGES)
    assert sum(shares.values()) == pytest.approx(1.0)
    table = stages.markdown({"proxy": (samples, 300.0)})
    assert f"| **all** | 100 / 300 ({samples.total()} samples) |" in table


def test_the_pass_throughs_forward_is_an_upstream_exchange_as_the_proxys_is() -> None:
    assert stages.stage_of([*SERVER, "forward (passthrough.py)"]) == stages.UPSTREAM


def test_a_stage_a_leg_never_reaches_shows_a_dash_beside_the_legs_that_do() -> None:
    table = stages.markdown(
        {
            "pass-through": ({stages.UPSTREAM: 3}, 100.0),
            "proxy": ({stages.UPSTREAM: 1, stages.ADMISSION: 1}, 200.0),
        }
    )

    assert f"| {stages.ADMISSION} | - | 50.0 / 100 |" in table
    assert f"| {stages.UPSTREAM} | 100.0 / 100 | 50.0 / 100 |" in table
