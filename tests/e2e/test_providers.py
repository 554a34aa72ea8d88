"""The OpenAI-shaped providers through their own paths, with the official SDKs as clients.

vllm, openai_compatible, deepinfra-like servers and a setting-backed openai all run against the
fake upstream; azure against its Azure URL layout. Each is billed exactly and holds every limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.typedefs import PROVIDER_SETTINGS
from tests.e2e.conftest import KEYS, Gateway, Start, write_pricing

SETTINGS_PATH = "/api/provider-settings"
UPSTREAM_SECRET = "sk-setting-secret-4321"
MODEL = "gpt-4o-mini"
PRICES = {MODEL: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(tmp_path, PRICES)


async def create_setting(
    gateway: Gateway, provider: str, setting: dict[str, str], **fields: Any
) -> dict[str, Any]:
    """A provider setting, once every replica holds it."""
    name = f"{provider}-{uuid.uuid4().hex[:8]}"
    body = {"provider": provider, "name": name, "setting": setting, **fields}
    response = await gateway.keymgmt.put(SETTINGS_PATH, json=body)
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    async with asyncio.timeout(10):
        while True:
            if all(p.app[PROVIDER_SETTINGS].by_id(created["id"]) for p in gateway.proxies):
                return created
            await asyncio.sleep(0.005)


def upstream_root(gateway: Gateway) -> str:
    return gateway.settings.openai_base_url.removesuffix("/v1")


@dataclass(frozen=True)
class Route:
    """How one provider is set up and called with the OpenAI SDK."""

    provider: str
    setting: Callable[[Gateway], dict[str, str]]
    client: Callable[[Gateway, str, str, int], openai.AsyncOpenAI]  # (gateway, key, name, replica)
    upstream_path: str  # where the fake upstream saw the chat call


def sdk_at(path: str) -> Callable[[Gateway, str, str, int], openai.AsyncOpenAI]:
    def client(gateway: Gateway, api_key: str, name: str, replica: int) -> openai.AsyncOpenAI:
        url = gateway.proxies[replica].make_url(path.format(name=name))
        made = openai.AsyncOpenAI(base_url=str(url), api_key=api_key, max_retries=0)
        gateway.clients.append(made)
        return made

    return client


def azure_client(gateway: Gateway, api_key: str, name: str, replica: int) -> openai.AsyncOpenAI:
    made = openai.AsyncAzureOpenAI(
        azure_endpoint=str(gateway.proxies[replica].make_url("/api/providers/azure")),
        api_version="2024-10-21",
        api_key=api_key,
        max_retries=0,
    )
    gateway.clients.append(made)
    return made


ROUTES = {
    "openai": Route(
        "openai",
        lambda g: {"apikey": UPSTREAM_SECRET, "baseUrl": g.settings.openai_base_url,
                   "organization": "org-of-the-setting"},
        sdk_at("/api/providers/openai/v1"),
        "/v1/chat/completions",
    ),
    "vllm": Route(
        "vllm",
        lambda g: {"apikey": UPSTREAM_SECRET, "url": upstream_root(g)},
        sdk_at("/api/providers/vllm/v1"),
        "/v1/chat/completions",
    ),
    "openai_compatible": Route(
        "openai_compatible",
        lambda g: {"apikey": UPSTREAM_SECRET, "baseUrl": g.settings.openai_base_url},
        sdk_at("/api/custom/providers/{name}/v1"),
        "/v1/chat/completions",
    ),
    "azure": Route(
        "azure",
        lambda g: {"apikey": UPSTREAM_SECRET, "endpoint": upstream_root(g)},
        azure_client,
        f"/openai/deployments/{MODEL}/chat/completions",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(ROUTES))
def route(request: pytest.FixtureRequest) -> Route:
    return ROUTES[request.param]


async def provider_key(gateway: Gateway, route: Route, **fields: Any) -> tuple[str, str, str]:
    """(raw key, key id, setting name) of a key whose one setting is for `route`'s provider."""
    setting = await create_setting(gateway, route.provider, route.setting(gateway))
    raw, config = await gateway.create_key(settingIds=[setting["id"]], **fields)
    return raw, config["keyId"], setting["name"]


async def test_each_provider_answers_its_sdk_with_the_settings_credential(
    priced: Gateway, route: Route
) -> None:
    raw, _, name = await provider_key(priced, route)
    client = route.client(priced, raw, name, 0)
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    [seen] = [r for r in priced.upstream.recorded if r.path == route.upstream_path]
    credential = seen.headers.get("api-key") or seen.headers["authorization"]
    assert credential.endswith(UPSTREAM_SECRET)
    assert raw not in str(seen.headers) and raw.encode() not in seen.body
    if route.provider == "openai":
        assert seen.headers["openai-organization"] == "org-of-the-setting"


async def test_each_providers_event_log_line_and_metric_name_the_provider_and_setting(
    gateway: Gateway, route: Route, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.proxy.calls")
    setting = await create_setting(gateway, route.provider, route.setting(gateway))
    raw, config = await gateway.create_key(settingIds=[setting["id"]])
    key_id = config["keyId"]
    client = route.client(gateway, raw, setting["name"], 0)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    async with asyncio.timeout(10):
        while True:
            response = await gateway.keymgmt.get(f"/api/reporting/keys/{key_id}/events")
            if events := (await response.json())["events"]:
                break
            await asyncio.sleep(0.05)
    [event] = events
    assert (event["provider"], event["settingId"]) == (route.provider, setting["id"])
    window = {"keyIds": key_id, "start": "0", "end": str(int(time.time()) + 60)}
    response = await gateway.keymgmt.get("/api/events", params=window)
    [original] = await response.json()
    assert original["provider"] == route.provider
    [line] = [r.__dict__ for r in caplog.records if r.name == "gateway.proxy.calls"]
    assert (line["provider"], line["setting_id"]) == (route.provider, setting["id"])
    async with gateway.keymgmt.session.get(gateway.proxies[0].make_url("/metrics")) as metrics:
        text = await metrics.text()
    providers = {
        s.labels["provider"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_proxy_requests_total" and s.labels["status"] == "200"
    }
    assert providers == {route.provider}


async def test_each_provider_bills_a_stream_like_its_json_answer(
    priced: Gateway, route: Route
) -> None:
    raw, key_id, name = await provider_key(priced, route, costLimitInUsd=10)
    client = route.client(priced, raw, name, 0)
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.usage is not None
    expected = completion.usage.prompt_tokens * 1e-6 + completion.usage.completion_tokens * 2e-6
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)  # the usage it did not ask for is hidden
    assert await priced.settled_cost(key_id, 2 * expected) == pytest.approx(2 * expected)


async def test_a_settings_cost_map_prices_its_calls_before_the_pricing_file(
    priced: Gateway,
) -> None:
    """USD per 1,000 tokens, for the models it names; any other model keeps PRICING_FILE's."""

    async def call_on_a_setting(cost_map: dict[str, dict[str, float]]) -> tuple[int, int, str]:
        """One call with a key whose one setting (vllm) has `cost_map`: its prompt and
        completion tokens, and the key's id."""
        setting = await create_setting(
            priced, "vllm", {"url": upstream_root(priced)}, costMap=cost_map
        )
        raw, config = await priced.create_key(settingIds=[setting["id"]], costLimitInUsd=10)
        client = sdk_at("/api/providers/vllm/v1")(priced, raw, "", 0)
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert completion.usage is not None
        return completion.usage.prompt_tokens, completion.usage.completion_tokens, config["keyId"]

    mapped = {"promptCostPerModel": {MODEL: 0.01}, "completionCostPerModel": {MODEL: 0.03}}
    prompt, completion, key_id = await call_on_a_setting(mapped)
    expected = prompt * 1e-5 + completion * 3e-5
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)
    prompt, completion, key_id = await call_on_a_setting({"promptCostPerModel": {"another": 1}})
    filed = prompt * 1e-6 + completion * 2e-6  # PRICING_FILE's
    assert await priced.settled_cost(key_id, filed) == pytest.approx(filed)


async def test_each_provider_holds_the_rate_limit_across_replicas(
    priced: Gateway, route: Route
) -> None:
    raw, _, name = await provider_key(priced, route, rateLimitOverTime=2, rateLimitUnit="m")
    for replica in (0, 1):
        client = route.client(priced, raw, name, replica)
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        await route.client(priced, raw, name, 0).chat.completions.create(
            model=MODEL, messages=MESSAGES
        )


async def test_each_provider_holds_the_cost_limit(priced: Gateway, route: Route) -> None:
    raw, key_id, name = await provider_key(priced, route, costLimitInUsd=1e-5)
    client = route.client(priced, raw, name, 0)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    await priced.settled_cost(key_id, 1e-5)
    with pytest.raises(openai.RateLimitError):
        for _ in range(5):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)


async def test_each_provider_refuses_a_revoked_or_expired_key(
    priced: Gateway, route: Route
) -> None:
    raw, key_id, name = await provider_key(priced, route)
    client = route.client(priced, raw, name, 0)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    response = await priced.keymgmt.patch(f"{KEYS}/{key_id}", json={"revoked": True})
    assert response.status == 200
    await asyncio.sleep(0.5)  # the change feed brings it well within this
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    short, _, short_name = await provider_key(priced, route, ttl="1s")
    await asyncio.sleep(1.2)
    with pytest.raises(openai.AuthenticationError):
        await route.client(priced, short, short_name, 0).chat.completions.create(
            model=MODEL, messages=MESSAGES
        )


async def test_a_key_without_a_setting_for_the_provider_gets_403(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = sdk_at("/api/providers/vllm/v1")(gateway, raw, "", 0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert "no vllm provider setting" in str(refused.value)
    assert gateway.upstream.recorded == []


async def test_a_model_outside_the_settings_allowed_models_gets_403(gateway: Gateway) -> None:
    setting = await create_setting(
        gateway, "vllm", {"url": upstream_root(gateway)}, allowedModels=[MODEL]
    )
    raw, _ = await gateway.create_key(settingIds=[setting["id"]])
    client = sdk_at("/api/providers/vllm/v1")(gateway, raw, "", 0)
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(gateway.upstream.recorded) == 1


async def test_rotation_spreads_calls_over_the_keys_openai_settings(gateway: Gateway) -> None:
    secrets = [f"sk-rotated-{n}" for n in range(3)]
    settings = [
        await create_setting(
            gateway, "openai", {"apikey": secret, "baseUrl": gateway.settings.openai_base_url}
        )
        for secret in secrets
    ]
    raw, _ = await gateway.create_key(
        settingIds=[setting["id"] for setting in settings], rotationEnabled=True
    )
    client = gateway.client(raw)
    for _ in range(30):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    used = {seen.headers["authorization"] for seen in gateway.upstream.recorded}
    assert used == {f"Bearer {secret}" for secret in secrets}


async def test_the_azure_layout_streams_its_filter_chunks_and_bills_them(
    start_gateway: Start, pricing_file: str
) -> None:
    gateway = await start_gateway(pricing_file=pricing_file)
    route = ROUTES["azure"]
    raw, key_id, name = await provider_key(gateway, route, costLimitInUsd=10)
    client = route.client(gateway, raw, name, 0)
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices == []  # the prompt filter chunk, relayed
    usage = chunks[-1].usage
    assert usage is not None
    expected = usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)
