"""SIGTERM to `python -m proxy` mid-stream: it stops accepting, finishes the stream, drains the
stream's spend to Redis and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import services
from aiohttp import web
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app as create_keymgmt
from proxy.fakeupstream import REPLY_WORDS, FakeOptions, create_fake_upstream
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL = "graceful-stop-model"  # priced only by our PRICING_FILE
INPUT_PRICE, OUTPUT_PRICE = 1e-06, 2e-06
CHUNKS, INTERVAL = 30, 0.1
GRACE = 30.0  # PROXY_TIMEOUT, the proxy's shutdown grace
MESSAGE = "Count to thirty please"
# The fake's rule: a prompt costs its words plus 3 per message; one chunk is one token.
PROMPT_TOKENS = len(MESSAGE.split()) + 3
EXPECTED_TEXT = " ".join(REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(CHUNKS))
EXPECTED_COST = PROMPT_TOKENS * INPUT_PRICE + CHUNKS * OUTPUT_PRICE


def _proxy_env(settings: Settings, upstream_url: str, pricing: Path, port: int) -> dict[str, str]:
    # Nothing of the developer's gateway configuration may leak in (PROXY_WORKERS, ...).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRESQL_", "REDIS_", "OPENAI_", "PROXY_", "IN_MEMORY_"))
    }
    postgres, redis = settings.postgres, settings.redis
    env.update(
        POSTGRESQL_HOSTS=",".join(postgres.hosts),
        POSTGRESQL_PORT=str(postgres.port),
        POSTGRESQL_USERNAME=postgres.username,
        POSTGRESQL_PASSWORD=postgres.password,
        POSTGRESQL_DB_NAME=postgres.db_name,
        REDIS_HOSTS=",".join(redis.hosts),
        REDIS_PORT=str(redis.port),
        REDIS_DB=str(redis.db),
        OPENAI_API_KEY=settings.openai_api_key,
        OPENAI_BASE_URL=upstream_url,
        PRICING_FILE=str(pricing),
        PROXY_HOST=services.HOST,
        PROXY_PORT=str(port),
        PROXY_TIMEOUT=f"{GRACE:.0f}s",
        IN_MEMORY_DB_UPDATE_INTERVAL="200ms",
        LOG_FORMAT="json",
    )
    return env


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _wait_healthy(proxy: Process, url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            assert proxy.returncode is None, f"proxy exited during startup:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"proxy not healthy:\n{_tail(log)}"
            try:
                async with session.get(f"{url}/api/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(0.1)


async def _wait_key_loaded(client: openai.AsyncOpenAI) -> None:
    # Listing models is free, so it leaves the key's spend at 0.
    deadline = time.monotonic() + 10
    while True:
        try:
            await client.models.list()
            return
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(services.HOST, port)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: caught as the listener closed
        return True
    writer.close()
    await writer.wait_closed()
    return False


@pytest.fixture
async def keymgmt(
    aiohttp_client: Any, settings: Settings
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    # In-process, on the same settings: its startup also migrates the test database.
    yield await aiohttp_client(create_keymgmt(settings))


async def test_sigterm_mid_stream_finishes_the_stream_and_drains_its_spend(
    aiohttp_server: Any,
    keymgmt: TestClient[web.Request, web.Application],
    settings: Settings,
    tmp_path: Path,
) -> None:
    upstream = await aiohttp_server(
        create_fake_upstream(FakeOptions(stream_chunks=CHUNKS, stream_interval=INTERVAL))
    )
    pricing = tmp_path / "pricing.json"
    prices = {"input_cost_per_token": INPUT_PRICE, "output_cost_per_token": OUTPUT_PRICE}
    pricing.write_text(json.dumps({MODEL: prices}))
    raw_key = f"sk-graceful-{uuid.uuid4().hex}"
    created = await keymgmt.put("/api/key-management/keys", json={"name": "g", "key": raw_key})
    assert created.status == 200, await created.text()
    key_id = (await created.json())["keyId"]

    proxy_log = tmp_path / "proxy.log"
    port = services.free_port()
    url = f"http://{services.HOST}:{port}"
    env = _proxy_env(settings, str(upstream.make_url("/v1")), pricing, port)
    # An asyncio subprocess: the fake upstream runs on this event loop, so nothing may block it.
    with proxy_log.open("wb") as output:
        proxy = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await _wait_healthy(proxy, url, proxy_log)
        base_url = f"{url}/api/providers/openai/v1"
        async with openai.AsyncOpenAI(base_url=base_url, api_key=raw_key, max_retries=0) as client:
            await _wait_key_loaded(client)
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": MESSAGE}], stream=True
            )
            chunks = [await anext(stream)]
            proxy.send_signal(signal.SIGTERM)

            # The listener closes first (aiohttp stops its sites before waiting for handlers),
            # so refusal shows within moments, long before the 3 s stream ends.
            deadline = time.monotonic() + 2
            while not await _refused(port):
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.02)
            assert proxy.returncode is None, "the proxy exited before finishing the stream"
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key=raw_key, max_retries=0
            ) as late_client:
                with pytest.raises(openai.APIConnectionError):
                    await late_client.models.list()

            chunks += [chunk async for chunk in stream]
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        content = [piece for piece in pieces if piece]
        assert len(content) == CHUNKS, _tail(proxy_log)
        assert "".join(content) == EXPECTED_TEXT
        assert chunks[-1].choices[0].finish_reason == "stop"

        assert await asyncio.wait_for(proxy.wait(), GRACE) == 0, _tail(proxy_log)
        # Read at once, without polling: the spend must be in Redis by the time the proxy is gone.
        report = await keymgmt.get(f"/api/reporting/keys/{key_id}")
        assert report.status == 200, await report.text()
        assert (await report.json())["costInUsd"] == pytest.approx(EXPECTED_COST, rel=1e-9)
        # The call's line, written as the stream ended during the stop, reached the log whole.
        entries = [json.loads(line) for line in proxy_log.read_text().splitlines()]
        [line] = [
            e for e in entries if e["message"] == "call" and e["path"].endswith("/chat/completions")
        ]
        assert (line["key_id"], line["status"], line["streamed"]) == (key_id, 200, True)
        assert line["completion_tokens"] == CHUNKS
    finally:
        if proxy.returncode is None:
            proxy.kill()
            await proxy.wait()
