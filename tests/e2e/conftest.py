"""A whole gateway in the test process: keymgmt, proxies and a fake upstream on real sockets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from keymgmt.app import create_app as create_keymgmt
from proxy.app import create_app as create_proxy
from proxy.fakeupstream import FAKE_UPSTREAM, FakeUpstream, create_fake_upstream
from proxy.typedefs import SNAPSHOT
from shared.config import Settings
from shared.models import hash_key

KEYS = "/api/key-management/keys"
PROXY_PATH = "/api/providers/openai/v1"


@dataclass
class Gateway:
    keymgmt: TestClient
    proxies: list[TestServer]
    upstream: FakeUpstream
    settings: Settings
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def base_url(self, replica: int = 0) -> str:
        return str(self.proxies[replica].make_url(PROXY_PATH))

    def client(self, api_key: str, replica: int = 0, **options: Any) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=self.base_url(replica), api_key=api_key, max_retries=0, **options
        )
        self.clients.append(client)
        return client

    def sync_client(self, api_key: str, replica: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url(replica), api_key=api_key, max_retries=0)

    async def create_key(self, **fields: Any) -> tuple[str, dict[str, Any]]:
        """A new key, once every proxy replica has it in its snapshot."""
        raw = f"sk-gw-{uuid.uuid4().hex}"
        response = await self.keymgmt.put(KEYS, json={"name": "test", "key": raw, **fields})
        assert response.status == 200, await response.text()
        await self.wait_until_known(raw)
        return raw, await response.json()

    async def wait_until_known(self, raw: str) -> None:
        """Until every replica's snapshot holds the key: the change feed brings it at once."""
        key_hash = hash_key(raw)
        async with asyncio.timeout(10):
            while True:
                if all(proxy.app[SNAPSHOT].get(key_hash) for proxy in self.proxies):
                    return
                await asyncio.sleep(0.005)

    async def wait_for_refresh(self) -> None:
        await asyncio.sleep(self.settings.snapshot_interval * 2 + 0.3)

    async def spend(self, key_id: str) -> dict[str, Any]:
        response = await self.keymgmt.get(f"/api/reporting/keys/{key_id}")
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]

    async def settled_cost(self, key_id: str, expected: float, within: float = 1.0) -> float:
        """The key's costInUsd once it reaches `expected`, or whatever it is after `within` s.
        A 503 (keymgmt cannot read Redis for a moment, as right after a failover) is asked
        again within that time."""
        deadline = time.monotonic() + within
        while True:
            response = await self.keymgmt.get(f"/api/reporting/keys/{key_id}")
            if response.status == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            assert response.status == 200, await response.text()
            cost = float((await response.json())["costInUsd"])
            if cost >= expected - 1e-12 or time.monotonic() > deadline:
                return cost
            await asyncio.sleep(0.02)


Start = Callable[..., Awaitable[Gateway]]  # the start_gateway fixture


def write_pricing(directory: Path, prices: dict[str, dict[str, float]]) -> str:
    """A PRICING_FILE in `directory` holding `prices` (model -> LiteLLM-style cost fields)."""
    path = directory / "prices.json"
    path.write_bytes(orjson.dumps(prices))
    return str(path)


@pytest.fixture
async def start_gateway(
    aiohttp_client: Any, aiohttp_server: Any, settings: Settings
) -> AsyncIterator[Start]:
    started: list[Gateway] = []

    async def start(replicas: int = 1, **overrides: Any) -> Gateway:
        upstream_app = create_fake_upstream()
        upstream_server = await aiohttp_server(upstream_app)
        overrides.setdefault("openai_base_url", str(upstream_server.make_url("/v1")))
        gateway_settings = replace(settings, **overrides)
        keymgmt = await aiohttp_client(create_keymgmt(gateway_settings))
        proxies = [await aiohttp_server(create_proxy(gateway_settings)) for _ in range(replicas)]
        for proxy in proxies:
            await wait_healthy(proxy)
        gateway = Gateway(keymgmt, proxies, upstream_app[FAKE_UPSTREAM], gateway_settings)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        for client in gateway.clients:
            await client.close()


@pytest.fixture
async def gateway(start_gateway: Start) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def priced(start_gateway: Start, pricing_file: str) -> Gateway:
    """Two replicas billing by the prices of the test module's own `pricing_file` fixture."""
    return await start_gateway(replicas=2, pricing_file=pricing_file)


async def wait_healthy(server: TestServer) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(20):
        while True:
            async with session.get(server.make_url("/api/health")) as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.05)
