"""Upstream faults through the proxy: a timeout, a closed port, and a storm of 500s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import services
from yarl import URL

from proxy.typedefs import SESSION
from tests.e2e.conftest import Start, write_pricing

MODEL = "priced-model"
INPUT, OUTPUT = 1e-4, 1e-3
MESSAGES: list[Any] = [{"role": "user", "content": "hello there friend"}]
# What the fake upstream reports for MESSAGES (its package docstring), and what it costs.
CHAT_COST = 6 * INPUT + 5 * OUTPUT
FAILING_REQUESTS, CONCURRENCY = 1000, 50
MAX_UPSTREAM_CONNECTIONS = 60


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}}
    )


async def chat(client: openai.AsyncOpenAI, **options: Any) -> Any:
    return await client.chat.completions.create(model=MODEL, messages=MESSAGES, **options)


async def test_upstream_timeout_is_a_504_and_releases_the_reservation(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    raw, config = await gateway.create_key(costLimitInUsd=1.0)
    client = gateway.client(raw)
    # 990 output tokens and the prompt (28 bytes) reserve 0.9928 of the 1 USD budget: all but
    # nothing left.
    whole_budget = 990
    gateway.upstream.options.latency = 2
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        await chat(client, max_tokens=whole_budget, extra_headers={"x-request-timeout": "200ms"})
    assert time.monotonic() - started < 1.5
    assert raised.value.status_code == 504
    assert raised.value.code == "upstream_timeout"
    assert raised.value.type == "upstream_error"

    gateway.upstream.options.latency = 0
    await asyncio.sleep(0.5)  # the release is flushed to Redis right after the answer
    completion = await chat(client, max_tokens=whole_budget)
    assert completion.choices[0].message.content
    assert await gateway.settled_cost(config["keyId"], CHAT_COST) == pytest.approx(CHAT_COST)


async def test_unreachable_upstream_is_a_502(start_gateway: Start, pricing_file: str) -> None:
    closed = f"http://127.0.0.1:{services.free_port()}/v1"
    gateway = await start_gateway(pricing_file=pricing_file, openai_base_url=closed)
    raw, config = await gateway.create_key(costLimitInUsd=1.0)
    client = gateway.client(raw)
    with pytest.raises(openai.APIStatusError) as raised:
        await chat(client)
    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_unreachable"
    await asyncio.sleep(0.3)
    assert (await gateway.spend(config["keyId"]))["costInUsd"] == 0


def established_to(port: int) -> int:
    """Open TCP connections to 127.0.0.1:port, from /proc (this process's network namespace)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # 01: ESTABLISHED
                count += 1
    return count


def pooled_connections(connector: aiohttp.BaseConnector) -> tuple[int, int]:
    """(idle in the pool, in use) of an aiohttp connector; private fields, read only."""
    idle = sum(len(conns) for conns in connector._conns.values())
    in_use = len(connector._acquired)
    return idle, in_use


async def fail_all(client: openai.AsyncOpenAI, count: int, concurrency: int) -> list[object]:
    """Send `count` chats, `concurrency` at a time; what each raised (or returned)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> object:
        async with gate:
            try:
                return await chat(client)
            except openai.APIError as error:
                return error

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_a_storm_of_upstream_500s_passes_through_without_leaking(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    raw, config = await gateway.create_key(costLimitInUsd=1.0)
    client = gateway.client(raw)
    gateway.upstream.options.fail_status = 500
    gateway.upstream.options.record = False

    started = time.monotonic()
    outcomes = await fail_all(client, FAILING_REQUESTS, CONCURRENCY)
    elapsed = time.monotonic() - started

    passed_through = [
        o for o in outcomes if isinstance(o, openai.InternalServerError) and o.status_code == 500
    ]
    assert len(passed_through) == FAILING_REQUESTS, {type(o).__name__ for o in outcomes}
    assert passed_through[0].type == "server_error"  # the upstream's own error body

    connector = gateway.proxies[0].app[SESSION].connector
    assert connector is not None
    idle, in_use = pooled_connections(connector)
    upstream_port = URL(gateway.settings.openai_base_url).port
    assert upstream_port is not None
    sockets = established_to(upstream_port)
    print(
        f"\n{FAILING_REQUESTS} failing requests at concurrency {CONCURRENCY} in {elapsed:.2f}s"
        f" ({FAILING_REQUESTS / elapsed:.0f}/s); upstream connections: {idle} idle and"
        f" {in_use} in use in the proxy's pool (limit {connector.limit}),"
        f" {sockets} established sockets to the upstream port"
    )
    assert in_use == 0
    assert idle <= min(connector.limit, MAX_UPSTREAM_CONNECTIONS)
    assert sockets <= MAX_UPSTREAM_CONNECTIONS

    assert await gateway.settled_cost(config["keyId"], 0) == 0  # errors are not billed
    gateway.upstream.options.fail_status = None
    completion = await chat(client)
    assert completion.choices[0].message.content
    spend = await gateway.settled_cost(config["keyId"], CHAT_COST)
    assert spend == pytest.approx(CHAT_COST)
