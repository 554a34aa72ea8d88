"""Logs, metrics, usage events and reporting of proxied calls."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import services
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from shared.db import usage_events
from shared.db_engine import create_engine
from tests.e2e.conftest import Gateway, Start, write_pricing

MESSAGES = [{"role": "user", "content": "hello there friend"}]


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {"priced-model": {"input_cost_per_token": 1e-4, "output_cost_per_token": 1e-3}}
    )


async def events_of(settings: Settings, key_id: str, expected: int) -> list[Any]:
    """The key's event rows, once `expected` of them have reached Postgres (within seconds)."""
    engine = create_engine(settings.postgres, pool_size=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            async with engine.connect() as connection:
                query = (
                    usage_events.select()
                    .where(usage_events.c.key_id == key_id)
                    .order_by(usage_events.c.created_at)
                )
                rows = list((await connection.execute(query)).all())
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def test_one_call_gives_one_event_and_one_log_line(
    start_gateway: Start, pricing_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    raw, config = await gateway.create_key()
    client = gateway.client(raw, default_headers={"X-Request-Id": "req-observed-1"})
    with caplog.at_level(logging.INFO):
        await client.chat.completions.create(model="priced-model", messages=MESSAGES)
        rows = await events_of(gateway.settings, config["keyId"], 1)
        await asyncio.sleep(0.5)  # time for a duplicate to show, if there were one
        rows = await events_of(gateway.settings, config["keyId"], 2)
    assert len(rows) == 1
    event = rows[0]
    assert (event.request_id, event.path, event.model, event.status) == (
        "req-observed-1",
        "chat/completions",
        "priced-model",
        200,
    )
    assert (event.prompt_tokens, event.completion_tokens) == (6, 5)
    assert event.cost_nano == round((6 * 1e-4 + 5 * 1e-3) * 1e9)
    assert event.streamed is False
    assert 0 < event.upstream_ms <= event.latency_ms

    lines = [r for r in caplog.records if r.name == "gateway.proxy.calls"]
    assert len(lines) == 1
    line = lines[0].__dict__
    assert line["request_id"] == "req-observed-1"
    assert line["key_id"] == config["keyId"]
    assert (line["status"], line["prompt_tokens"], line["completion_tokens"]) == (200, 6, 5)
    assert line["cost_usd"] == pytest.approx(6 * 1e-4 + 5 * 1e-3)
    assert line["overhead_ms"] >= 0 and line["upstream_ms"] > 0
    everything = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert raw not in everything
    assert gateway.settings.openai_api_key not in everything
    assert "hello there friend" not in everything


async def test_metrics_parse_and_count_the_call(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    await gateway.client(raw).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    session = gateway.keymgmt.session
    async with session.get(gateway.proxies[0].make_url("/metrics")) as response:
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("gateway_proxy_requests_total",
           (("endpoint", "chat/completions"), ("provider", "openai"), ("status", "200"),
            ("streamed", "0")))  # fmt: skip
    assert samples[key] == 1
    tokens = ("gateway_proxy_tokens_total", (("kind", "completion"), ("model", "gpt-4o-mini")))
    assert samples[tokens] == 5
    assert samples[("gateway_snapshot_keys", ())] >= 1
    assert ("gateway_snapshot_settings", ()) in samples
    assert any(name == "gateway_proxy_overhead_seconds_count" for name, _ in samples)
    keymgmt_text = await (await gateway.keymgmt.get("/metrics")).text()
    names = {f.name for f in text_string_to_metric_families(keymgmt_text)}
    assert {"gateway_keymgmt_requests", "gateway_usage_events_written"} <= names


async def test_refusals_are_counted_by_reason(gateway: Gateway) -> None:
    session = gateway.keymgmt.session
    url = f"{gateway.base_url()}/models"
    async with session.get(url, headers={"Authorization": "Bearer sk-nobody"}) as response:
        assert response.status == 401
    async with session.get(gateway.proxies[0].make_url("/metrics")) as response:
        text = await response.text()
    refusals = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_proxy_refusals_total"
    ]
    assert [(s.labels["reason"], s.value) for s in refusals] == [("invalid_api_key", 1.0)]
    requests = [
        s.labels["endpoint"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_proxy_requests_total" and s.labels["status"] == "401"
    ]
    assert requests == ["models"]  # labelled by its path, though refused before it was read


async def test_statsd_lines_reach_a_udp_listener(start_gateway: Start) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = services.free_port()
    listener.bind(("127.0.0.1", port))
    listener.setblocking(False)
    try:
        gateway = await start_gateway(statsd_address=f"127.0.0.1:{port}")
        raw, _ = await gateway.create_key()
        await gateway.client(raw).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        received = b""
        deadline = time.monotonic() + 3
        while b"gateway_proxy_requests_total" not in received and time.monotonic() < deadline:
            try:
                received += listener.recv(65536) + b"\n"
            except BlockingIOError:
                await asyncio.sleep(0.05)
    finally:
        listener.close()
    lines = received.decode().splitlines()
    requests = [line for line in lines if line.startswith("gateway_proxy_requests_total:")]
    assert requests and "|c" in requests[0]
    assert "endpoint:chat/completions" in requests[0] and "status:200" in requests[0]


async def test_reporting_events_usage_and_top_keys(start_gateway: Start, pricing_file: str) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    raw, config = await gateway.create_key()
    client = gateway.client(raw)
    for _ in range(3):
        await client.chat.completions.create(model="priced-model", messages=MESSAGES)
    await events_of(gateway.settings, config["keyId"], 3)
    key_id = config["keyId"]
    base = f"/api/reporting/keys/{key_id}"

    first = await (await gateway.keymgmt.get(f"{base}/events", params={"limit": "2"})).json()
    assert len(first["events"]) == 2 and first["next"]
    second = await (
        await gateway.keymgmt.get(f"{base}/events", params={"limit": "2", "cursor": first["next"]})
    ).json()
    assert len(second["events"]) == 1 and second["next"] is None
    ids = {e["eventId"] for e in first["events"] + second["events"]}
    assert len(ids) == 3
    assert all(type(e["createdAt"]) is int for e in first["events"])  # unix seconds, like keys

    usage = await (await gateway.keymgmt.get(f"{base}/usage", params={"granularity": "day"})).json()
    (bucket,) = usage["buckets"]
    assert bucket["requests"] == 3
    assert type(bucket["start"]) is int and bucket["start"] % 86400 == 0
    assert bucket["costInUsd"] == pytest.approx(3 * (6 * 1e-4 + 5 * 1e-3))
    assert 0 < bucket["latencyP50Ms"] <= bucket["latencyP99Ms"]

    top = await (
        await gateway.keymgmt.get("/api/reporting/top-keys", params={"limit": "1000"})
    ).json()
    assert any(entry["keyId"] == key_id and entry["requests"] == 3 for entry in top)

    for params in ({"granularity": "week"}, {"start": "10", "end": "5"}, {"end": "soon"}):
        response = await gateway.keymgmt.get(f"{base}/usage", params=params)
        assert response.status == 400
    response = await gateway.keymgmt.get("/api/reporting/top-keys", params={"limit": "0"})
    assert response.status == 400
    assert (await gateway.keymgmt.get(f"{base}/events", params={"cursor": "bogus"})).status == 400
