"""Routes end to end: the OpenAI SDK at /api/routes/<prefix>, fake upstreams failing on request.

Each step goes to an upstream of its own (the gateway's fake, or one more started here), so that
one can fail while the next answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import services

from proxy.fakeupstream import FAKE_UPSTREAM, FakeUpstream, create_fake_upstream
from proxy.fakeupstream.state import CUT_AFTER_CONTENT, ERROR_AFTER_PREAMBLE
from proxy.routes.cache import CACHE_PREFIX
from proxy.typedefs import POLICIES, ROUTES, USERS
from tests.e2e.conftest import Gateway, write_pricing
from tests.e2e.test_providers import create_setting

CHEAP, DEAR, CLAUDE = "gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest"
PRICES = {
    CHEAP: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
    DEAR: {"input_cost_per_token": 5e-6, "output_cost_per_token": 1.5e-5},
    CLAUDE: {"input_cost_per_token": 8e-7, "output_cost_per_token": 4e-6},
    "pricey": {"input_cost_per_token": 0.01, "output_cost_per_token": 0.01},
}
HELLO: Any = [{"role": "user", "content": "Say hello"}]
REPLY = "Hello from the fake upstream."


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(tmp_path, PRICES)


Upstream = Callable[[], Awaitable[tuple[FakeUpstream, str]]]


@pytest.fixture
def upstream(aiohttp_server: Any) -> Upstream:
    """One more fake upstream: (its state, its root URL)."""

    async def start() -> tuple[FakeUpstream, str]:
        app = create_fake_upstream()
        server = await aiohttp_server(app)
        return app[FAKE_UPSTREAM], str(server.make_url("")).rstrip("/")

    return start


def closed_root() -> str:
    return f"http://127.0.0.1:{services.free_port()}"


async def setting_at(gateway: Gateway, provider: str, root: str) -> str:
    """A setting of `provider` whose upstream is the fake at `root`."""
    fields = {
        "openai": {"apikey": "sk-step", "baseUrl": f"{root}/v1"},
        "azure": {"apikey": "sk-step", "endpoint": root},
        "anthropic": {"apikey": "sk-ant-step", "baseUrl": root},
    }[provider]
    return str((await create_setting(gateway, provider, fields))["id"])


def step(provider: str, setting_id: str, model: str = CHEAP, **fields: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "settingId": setting_id, "retryInterval": "0",
            **fields}  # fmt: skip


async def create_route(
    gateway: Gateway, steps: list[dict[str, Any]], key_ids: list[str], **fields: Any
) -> tuple[str, dict[str, Any]]:
    """(the OpenAI SDK's base_url path, the route), once every replica serves it."""
    prefix = f"/team-{uuid.uuid4().hex[:8]}"
    endpoint = fields.pop("endpoint", "chat/completions")
    body = {
        "name": "r",
        "path": f"{prefix}/{endpoint}",
        "keyIds": key_ids,
        "steps": steps,
        **fields,
    }
    response = await gateway.keymgmt.post("/api/routes", json=body)
    assert response.status == 200, await response.text()
    route = await response.json()
    await until(lambda: all(p.app[ROUTES].by_id(route["id"]) for p in gateway.proxies))
    return f"/api/routes{prefix}", route


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def client(gateway: Gateway, raw: str, base: str, replica: int = 0) -> openai.AsyncOpenAI:
    made = openai.AsyncOpenAI(
        base_url=str(gateway.proxies[replica].make_url(base)), api_key=raw, max_retries=0
    )
    gateway.clients.append(made)
    return made


async def key_with(gateway: Gateway, *setting_ids: str, **fields: Any) -> tuple[str, str]:
    raw, config = await gateway.create_key(settingIds=list(setting_ids), **fields)
    return raw, config["keyId"]


async def events_of(gateway: Gateway, key_id: str, count: int) -> list[dict[str, Any]]:
    """The key's usage events as keymgmt recorded them, oldest first, once there are `count`."""
    async with asyncio.timeout(10):
        while True:
            response = await gateway.keymgmt.get(f"/api/reporting/keys/{key_id}/events")
            events = (await response.json())["events"]
            if len(events) >= count:
                return sorted(events, key=lambda e: e.get("routeAttempt", 0))
            await asyncio.sleep(0.05)


def cost(model: str, usage: Any) -> float:
    prices = PRICES[model]
    return (
        usage.prompt_tokens * prices["input_cost_per_token"]
        + usage.completion_tokens * prices["output_cost_per_token"]
    )


def chat_calls(upstream: FakeUpstream) -> int:
    return sum(r.path.endswith(("/chat/completions", "/messages")) for r in upstream.recorded)


async def test_failover_on_503_billed_at_the_step_that_served_with_an_event_per_attempt(
    priced: Gateway, upstream: Upstream
) -> None:
    first, first_root = await upstream()
    second, second_root = await upstream()
    a, b = (
        await setting_at(priced, "openai", first_root),
        await setting_at(priced, "openai", second_root),
    )
    raw, key_id = await key_with(priced, a, b, costLimitInUsd=10)
    base, route = await create_route(
        priced, [step("openai", a, DEAR, retries=1), step("openai", b, CHEAP)], [key_id]
    )
    first.options.fail_next = [503, 503]
    raw_answer = await client(
        priced, raw, base, replica=1
    ).chat.completions.with_raw_response.create(model="anything", messages=HELLO)
    answer = raw_answer.parse()
    assert answer.choices[0].message.content == REPLY
    assert (raw_answer.headers["x-route-step"], raw_answer.headers["x-route-attempts"]) == (
        "1",
        "3",
    )
    [served] = [r for r in second.recorded if r.path == "/v1/chat/completions"]
    assert orjson.loads(served.body)["model"] == CHEAP  # the step's model replaces the body's
    assert served.headers["authorization"] == "Bearer sk-step"
    expected = cost(CHEAP, answer.usage)
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)
    events = await events_of(priced, key_id, 3)
    assert [(e["routeStep"], e["routeAttempt"], e["status"]) for e in events] == [
        (0, 1, 503), (0, 2, 503), (1, 3, 200),
    ]  # fmt: skip
    assert {e["routeId"] for e in events} == {route["id"]}
    assert [e["costInUsd"] > 0 for e in events] == [False, False, True]


async def test_a_429_is_retried_after_retry_after_unless_it_is_longer_than_the_step_timeout(
    gateway: Gateway, upstream: Upstream
) -> None:
    first, first_root = await upstream()
    second, second_root = await upstream()
    a, b = (
        await setting_at(gateway, "openai", first_root),
        await setting_at(gateway, "openai", second_root),
    )
    raw, key_id = await key_with(gateway, a, b)
    base, _ = await create_route(
        gateway, [step("openai", a, retries=1, timeout="2s"), step("openai", b)], [key_id]
    )
    sdk = client(gateway, raw, base)
    first.options.fail_next, first.options.retry_after = [429], "0.2"
    answer = await sdk.chat.completions.with_raw_response.create(model=CHEAP, messages=HELLO)
    assert (answer.headers["x-route-step"], answer.headers["x-route-attempts"]) == ("0", "2")
    assert chat_calls(first) == 2 and chat_calls(second) == 0
    # Asked to wait past the step's timeout: the next step is tried at once instead.
    first.options.fail_next, first.options.retry_after = [429], "30"
    answer = await sdk.chat.completions.with_raw_response.create(model=CHEAP, messages=HELLO)
    assert (answer.headers["x-route-step"], answer.headers["x-route-attempts"]) == ("1", "2")
    assert chat_calls(first) == 3 and chat_calls(second) == 1


async def test_failover_on_connection_refused_and_on_timeout(
    gateway: Gateway, upstream: Upstream
) -> None:
    slow, slow_root = await upstream()
    spare, spare_root = await upstream()
    closed = await setting_at(gateway, "openai", closed_root())
    stalled = await setting_at(gateway, "openai", slow_root)
    healthy = await setting_at(gateway, "openai", spare_root)
    raw, key_id = await key_with(gateway, closed, stalled, healthy)
    base, _ = await create_route(
        gateway,
        [step("openai", closed), step("openai", stalled, timeout="300ms"), step("openai", healthy)],
        [key_id],
        coolDown={"failures": 0},
    )
    slow.options.latency = 5
    for stream in (False, True):
        answer = await client(gateway, raw, base).chat.completions.with_raw_response.create(
            model=CHEAP, messages=HELLO, stream=stream
        )
        assert (answer.headers["x-route-step"], answer.headers["x-route-attempts"]) == ("2", "3")
    assert chat_calls(spare) == 2


async def test_the_whole_call_is_bounded_by_proxy_timeout_and_x_request_timeout(
    start_gateway: Any, upstream: Upstream
) -> None:
    """Steps without a timeout of their own, each with retries, on a stalled upstream: the call
    ends with a 504 once PROXY_TIMEOUT (or a shorter x-request-timeout) is spent, waits included."""
    gateway = await start_gateway(proxy_timeout=1.0)
    stalled, root = await upstream()
    stalled.options.latency = 30
    setting = await setting_at(gateway, "openai", root)
    raw, key_id = await key_with(gateway, setting)
    base, _ = await create_route(
        gateway, [step("openai", setting, retries=3), step("openai", setting, DEAR, retries=3)],
        [key_id], coolDown={"failures": 0},
    )  # fmt: skip
    sdk = client(gateway, raw, base)
    for extra, bound in (({}, 1.0), ({"x-request-timeout": "300ms"}, 0.3)):
        began = asyncio.get_running_loop().time()
        with pytest.raises(openai.APIStatusError) as timed_out:
            await sdk.chat.completions.create(model=CHEAP, messages=HELLO, extra_headers=extra)
        took = asyncio.get_running_loop().time() - began
        assert timed_out.value.status_code == 504, timed_out.value
        assert bound <= took < bound + 1.5, (extra, took)
        assert timed_out.value.response.headers["x-route-attempts"] == "1"  # no time for more


async def test_a_client_error_is_answered_at_once(gateway: Gateway, upstream: Upstream) -> None:
    first, first_root = await upstream()
    second, second_root = await upstream()
    a, b = (
        await setting_at(gateway, "openai", first_root),
        await setting_at(gateway, "openai", second_root),
    )
    raw, key_id = await key_with(gateway, a, b)
    base, _ = await create_route(
        gateway, [step("openai", a, retries=3), step("openai", b)], [key_id]
    )
    first.options.fail_next = [400]
    with pytest.raises(openai.BadRequestError) as refused:
        await client(gateway, raw, base).chat.completions.create(model=CHEAP, messages=HELLO)
    headers = refused.value.response.headers
    assert (headers["x-route-step"], headers["x-route-attempts"]) == ("0", "1")
    assert chat_calls(first) == 1 and chat_calls(second) == 0


async def test_a_stream_fails_over_before_its_first_content_event(
    gateway: Gateway, upstream: Upstream
) -> None:
    """An error event after a role-only chunk, or after Anthropic's message_start and ping."""
    openai_up, openai_root = await upstream()
    claude_up, claude_root = await upstream()
    spare, spare_root = await upstream()
    on_openai = await setting_at(gateway, "openai", openai_root)
    on_claude = await setting_at(gateway, "anthropic", claude_root)
    healthy = await setting_at(gateway, "openai", spare_root)
    raw, key_id = await key_with(gateway, on_openai, on_claude, healthy)
    base, _ = await create_route(
        gateway,
        [step("openai", on_openai), step("anthropic", on_claude, CLAUDE), step("openai", healthy)],
        [key_id],
    )
    openai_up.options.stream_fault = claude_up.options.stream_fault = ERROR_AFTER_PREAMBLE
    raw_stream = await client(gateway, raw, base).chat.completions.with_raw_response.create(
        model=CHEAP, messages=HELLO, stream=True
    )
    assert (raw_stream.headers["x-route-step"], raw_stream.headers["x-route-attempts"]) == (
        "2",
        "3",
    )
    chunks = [chunk async for chunk in raw_stream.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chat_calls(openai_up) == chat_calls(claude_up) == chat_calls(spare) == 1


async def test_after_content_a_broken_stream_ends_with_an_error_and_what_streamed_is_billed(
    priced: Gateway, upstream: Upstream
) -> None:
    first, first_root = await upstream()
    second, second_root = await upstream()
    a, b = (
        await setting_at(priced, "openai", first_root),
        await setting_at(priced, "openai", second_root),
    )
    raw, key_id = await key_with(priced, a, b, costLimitInUsd=10)
    base, _ = await create_route(priced, [step("openai", a), step("openai", b)], [key_id])
    first.options.stream_fault = CUT_AFTER_CONTENT
    text = []
    with pytest.raises(openai.APIError) as broken:
        stream = await client(priced, raw, base).chat.completions.create(
            model=CHEAP, messages=HELLO, stream=True
        )
        async for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "stream broke" in str(broken.value)
    assert "".join(text) == "Hello from"  # the two content chunks upstream sent
    assert chat_calls(second) == 0  # no failover once content went out
    # Counted with tiktoken, whose encodings may still be loading: allow it the time.
    assert await priced.settled_cost(key_id, 1e-9, within=10) > 0


async def test_an_anthropic_step_answers_the_openai_sdk_streamed_and_not_billed_exactly(
    priced: Gateway,
) -> None:
    root = priced.settings.openai_base_url.removesuffix("/v1")
    claude = await setting_at(priced, "anthropic", root)
    raw, key_id = await key_with(priced, claude, costLimitInUsd=10)
    base, _ = await create_route(priced, [step("anthropic", claude, CLAUDE)], [key_id])
    sdk = client(priced, raw, base)
    answer = await sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": "Be brief"}, *HELLO], max_tokens=64
    )
    assert answer.choices[0].message.content == REPLY
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    stream = await sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": "Be brief"}, *HELLO], max_tokens=64,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage == answer.usage
    [sent, _] = [r for r in priced.upstream.recorded if r.path == "/v1/messages"]
    assert orjson.loads(sent.body)["system"] == [{"type": "text", "text": "Be brief"}]
    assert sent.headers["anthropic-version"] and sent.headers["x-api-key"] == "sk-ant-step"
    expected = 2 * cost(CLAUDE, answer.usage)
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="m", messages=HELLO, logprobs=True)
    assert "logprobs" in str(refused.value)


async def test_a_dead_target_is_skipped_while_it_cools_down(
    gateway: Gateway, upstream: Upstream
) -> None:
    dead, dead_root = await upstream()
    a = await setting_at(gateway, "openai", dead_root)
    b = await setting_at(gateway, "openai", gateway.settings.openai_base_url.removesuffix("/v1"))
    raw, key_id = await key_with(gateway, a, b)
    base, _ = await create_route(
        gateway, [step("openai", a), step("openai", b)], [key_id],
        coolDown={"failures": 2, "period": "1m"},
    )  # fmt: skip
    dead.options.fail_status = 503
    sdk = client(gateway, raw, base)
    seen = []
    for _ in range(4):
        answer = await sdk.chat.completions.with_raw_response.create(model=CHEAP, messages=HELLO)
        seen.append((answer.headers["x-route-step"], answer.headers["x-route-attempts"]))
    assert seen == [("1", "2"), ("1", "2"), ("1", "1"), ("1", "1")]
    assert chat_calls(dead) == 2


async def test_openai_then_azure_then_anthropic(gateway: Gateway, upstream: Upstream) -> None:
    """The README's example: OpenAI is down, Azure overloaded, Claude answers."""
    azure_up, azure_root = await upstream()
    openai_setting = await setting_at(gateway, "openai", closed_root())
    azure = await setting_at(gateway, "azure", azure_root)
    claude = await setting_at(gateway, "anthropic", gateway.settings.openai_base_url[:-3])
    raw, key_id = await key_with(gateway, openai_setting, azure, claude)
    steps = [
        step("openai", openai_setting, DEAR),
        step("azure", azure, DEAR, retries=1, params={"deploymentId": "prod-4o"}),
        step("anthropic", claude, CLAUDE),
    ]
    base, _ = await create_route(gateway, steps, [key_id], retryStrategy="exponential")
    azure_up.options.fail_next = [503, 503]
    answer = await client(gateway, raw, base).chat.completions.with_raw_response.create(
        model=DEAR, messages=HELLO
    )
    assert answer.parse().choices[0].message.content == REPLY
    assert (answer.headers["x-route-step"], answer.headers["x-route-attempts"]) == ("2", "4")
    paths = {(r.path, r.query) for r in azure_up.recorded}
    assert paths == {("/openai/deployments/prod-4o/chat/completions", "api-version=2024-10-21")}


async def test_embeddings_through_a_route(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway)
    base, _ = await create_route(
        gateway, [{"provider": "openai", "model": "text-embedding-3-small"}], [key_id],
        endpoint="embeddings",
    )  # fmt: skip
    answer = await client(gateway, raw, base).embeddings.with_raw_response.create(
        model="x", input="hello"
    )
    assert answer.parse().data and answer.headers["x-route-step"] == "0"


async def test_who_may_call_and_a_deleted_route_is_404_at_every_replica(
    gateway_pair: Gateway,
) -> None:
    gateway = gateway_pair
    raw, key_id = await key_with(gateway)
    stranger, _ = await key_with(gateway)
    base, route = await create_route(gateway, [{"provider": "openai", "model": CHEAP}], [key_id])
    for replica in (0, 1):
        await client(gateway, raw, base, replica).chat.completions.create(
            model=CHEAP, messages=HELLO
        )
    with pytest.raises(openai.PermissionDeniedError):
        await client(gateway, stranger, base).chat.completions.create(model=CHEAP, messages=HELLO)
    with pytest.raises(openai.NotFoundError):
        await client(gateway, raw, "/api/routes/nowhere").chat.completions.create(
            model=CHEAP, messages=HELLO
        )
    # A changed route is served as changed, at once.
    changed = {"steps": [{"provider": "openai", "model": DEAR}]}
    assert (await gateway.keymgmt.patch(f"/api/routes/{route['id']}", json=changed)).status == 200
    await until(
        lambda: all(
            (served := p.app[ROUTES].by_id(route["id"])) is not None
            and served.steps[0].model == DEAR
            for p in gateway.proxies
        )
    )
    await client(gateway, raw, base, 1).chat.completions.create(model=CHEAP, messages=HELLO)
    assert orjson.loads(gateway.upstream.recorded[-1].body)["model"] == DEAR
    async with aiohttp.ClientSession() as session:
        url = gateway.proxies[0].make_url(f"{base}/chat/completions")
        auth = {"Authorization": f"Bearer {raw}"}
        async with session.post(url, data=b"{not json", headers=auth) as bad:
            assert (bad.status, bad.headers["x-route-attempts"]) == (400, "0")
            assert (await bad.json())["error"]["code"] == "invalid_json"
    assert (await gateway.keymgmt.delete(f"/api/routes/{route['id']}")).status == 204
    await until(lambda: not any(p.app[ROUTES].by_id(route["id"]) for p in gateway.proxies))
    for replica in (0, 1):
        with pytest.raises(openai.NotFoundError):
            await client(gateway, raw, base, replica).chat.completions.create(
                model=CHEAP, messages=HELLO
            )


@pytest.fixture
async def gateway_pair(start_gateway: Any) -> Gateway:
    return await start_gateway(replicas=2)  # type: ignore[no-any-return]


def cached_route(gateway: Gateway, key_id: str, steps: list[dict[str, Any]] | None = None) -> Any:
    return create_route(
        gateway, steps or [{"provider": "openai", "model": CHEAP}], [key_id],
        cacheConfig={"enabled": True, "ttl": "1m"},
    )  # fmt: skip


async def test_a_repeated_deterministic_request_is_a_hit_in_its_own_form_billed_zero(
    priced: Gateway,
) -> None:
    raw, key_id = await key_with(priced, costLimitInUsd=10)
    base, _ = await cached_route(priced, key_id)
    asked: Any = {"model": CHEAP, "messages": HELLO, "temperature": 0, "max_tokens": 20}
    first = await client(priced, raw, base).chat.completions.with_raw_response.create(**asked)
    assert first.headers["x-cache"] == "miss"
    calls = chat_calls(priced.upstream)
    again = await client(priced, raw, base, 1).chat.completions.with_raw_response.create(**asked)
    assert (again.headers["x-cache"], again.headers["x-route-attempts"]) == ("hit", "0")
    assert again.headers["content-type"].startswith("application/json")
    assert again.parse().model_dump() == first.parse().model_dump()
    streamed = await client(priced, raw, base).chat.completions.with_raw_response.create(
        **asked, stream=True
    )
    assert streamed.headers["x-cache"] == "hit"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in streamed.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chat_calls(priced.upstream) == calls  # neither hit went upstream
    expected = cost(CHEAP, first.parse().usage)
    events = await events_of(priced, key_id, 3)
    hits = [e for e in events if e["cacheHit"]]
    assert len(hits) == 2 and all(e["costInUsd"] == 0 for e in hits)
    assert [e["savedCostInUsd"] for e in hits] == [pytest.approx(expected)] * 2
    assert await priced.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_a_streamed_miss_is_kept_and_served_as_json(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway)
    base, _ = await cached_route(gateway, key_id)
    asked: Any = {"model": CHEAP, "messages": HELLO, "seed": 7}
    stream = await client(gateway, raw, base).chat.completions.create(**asked, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    answer = await client(gateway, raw, base).chat.completions.with_raw_response.create(**asked)
    assert answer.headers["x-cache"] == "hit"
    parsed = answer.parse()
    assert parsed.choices[0].message.content == streamed == REPLY
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5


async def test_what_differs_is_a_miss(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway)
    base, _ = await cached_route(gateway, key_id)
    sdk = client(gateway, raw, base)
    tool: Any = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    asked: Any = {"model": CHEAP, "messages": HELLO, "seed": 1, "temperature": 0.5}
    await sdk.chat.completions.create(**asked)
    for changed in ({"model": DEAR}, {"temperature": 0.7}, {"tools": [tool]}, {"max_tokens": 9},
                    {"seed": None, "temperature": 0.5}):  # fmt: skip
        answer = await sdk.chat.completions.with_raw_response.create(**{**asked, **changed})
        assert answer.headers["x-cache"] == "miss", changed
    repeated = await sdk.chat.completions.with_raw_response.create(**asked)
    assert repeated.headers["x-cache"] == "hit"


async def test_errors_and_cut_streams_are_not_kept(gateway: Gateway, upstream: Upstream) -> None:
    failing, root = await upstream()
    setting = await setting_at(gateway, "openai", root)
    raw, key_id = await key_with(gateway, setting)
    base, _ = await cached_route(gateway, key_id, [step("openai", setting)])
    sdk = client(gateway, raw, base)
    asked: Any = {"model": CHEAP, "messages": HELLO, "temperature": 0}
    failing.options.fail_next = [500]
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(**asked)
    failing.options.stream_fault = CUT_AFTER_CONTENT
    with pytest.raises(openai.APIError):
        async for _ in await sdk.chat.completions.create(**asked, stream=True):
            pass
    failing.options.stream_fault = ""
    for expected in ("miss", "hit"):
        answer = await sdk.chat.completions.with_raw_response.create(**asked)
        assert answer.headers["x-cache"] == expected
    assert chat_calls(failing) == 3


async def test_hits_count_against_the_rate_limit(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway, rateLimitOverTime=2, rateLimitUnit="m")
    base, _ = await cached_route(gateway, key_id)
    sdk = client(gateway, raw, base)
    asked: Any = {"model": CHEAP, "messages": HELLO, "temperature": 0}
    await sdk.chat.completions.create(**asked)
    hit = await sdk.chat.completions.with_raw_response.create(**asked)
    assert hit.headers["x-cache"] == "hit"
    assert hit.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        await sdk.chat.completions.create(**asked)
    assert refused.value.response.headers["x-route-attempts"] == "0"


async def test_the_reservation_is_sized_for_the_dearest_step(
    priced: Gateway, upstream: Upstream
) -> None:
    """A call holds what its dearest step may cost while in flight, whichever step serves it."""
    slow, root = await upstream()
    slow.options.latency = 1.0
    setting = await setting_at(priced, "openai", root)
    raw, key_id = await key_with(priced, setting, costLimitInUsd=0.05)
    cheap, _ = await create_route(priced, [step("openai", setting)], [key_id])
    dear_last, _ = await create_route(
        priced, [step("openai", setting), step("openai", setting, "pricey")], [key_id]
    )
    asked: Any = {"model": CHEAP, "messages": HELLO, "max_tokens": 10}
    for in_flight, admitted in ((cheap, True), (dear_last, False)):
        calls = chat_calls(slow)
        first = asyncio.create_task(client(priced, raw, in_flight).chat.completions.create(**asked))
        await until(lambda seen=calls: chat_calls(slow) > seen)  # holding its reservation
        second = client(priced, raw, cheap).chat.completions.create(**asked)
        if admitted:
            await second
        else:
            with pytest.raises(openai.RateLimitError) as refused:
                await second
            assert "held by requests in flight" in str(refused.value)
        await first


async def test_a_routes_call_is_screened_and_restored_and_never_cached_with_values(
    gateway: Gateway, upstream: Upstream
) -> None:
    fake, root = await upstream()
    fake.options.echo = True
    email = "jane.roe@example.com"
    created = await gateway.keymgmt.post(
        "/api/policies",
        json={"name": "pii", "config": {"rules": {"email": "allow_but_redact"}}, "restore": True},
    )
    policy_id = (await created.json())["id"]
    setting_id = await setting_at(gateway, "openai", root)
    raw, key_id = await key_with(gateway, setting_id, policyId=policy_id)
    await until(lambda: all(p.app[POLICIES].get(policy_id) for p in gateway.proxies))
    base, _ = await create_route(
        gateway, [step("openai", setting_id)], [key_id], cacheConfig={"enabled": True}
    )
    asked = [{"role": "user", "content": f"Write to {email}"}]
    for _ in range(2):
        answer = await client(gateway, raw, base).chat.completions.with_raw_response.create(
            model=CHEAP, messages=asked, temperature=0
        )
        assert answer.parse().choices[0].message.content == f"Write to {email}"
        assert answer.headers["x-cache"] == "miss"  # an answer with values is never kept
    assert all(email.encode() not in seen.body for seen in fake.recorded)
    assert chat_calls(fake) == 2


async def test_the_cache_key_is_of_the_redacted_request(
    gateway: Gateway, upstream: Upstream, redis_client: Any
) -> None:
    """Two requests that differ only in a value the key's policy redacts are one cache entry,
    and what Redis keeps holds the placeholder, never the value."""
    fake, root = await upstream()
    fake.options.echo = True
    created = await gateway.keymgmt.post(
        "/api/policies", json={"name": "pii", "config": {"rules": {"email": "allow_but_redact"}}}
    )
    policy_id = (await created.json())["id"]
    setting_id = await setting_at(gateway, "openai", root)
    raw, key_id = await key_with(gateway, setting_id, policyId=policy_id)
    await until(lambda: all(p.app[POLICIES].get(policy_id) for p in gateway.proxies))
    base, route = await cached_route(gateway, key_id, [step("openai", setting_id)])
    seen = []
    for email in ("jane.roe@example.com", "john.doe@example.org"):
        answer = await client(gateway, raw, base).chat.completions.with_raw_response.create(
            model=CHEAP, messages=[{"role": "user", "content": f"Write to {email}"}], temperature=0
        )
        seen.append(answer.headers["x-cache"])
        assert answer.parse().choices[0].message.content == "Write to [EMAIL_1]"
    assert seen == ["miss", "hit"] and chat_calls(fake) == 1
    names = [name async for name in redis_client.scan_iter(f"{CACHE_PREFIX}{route['id']}:*")]
    [kept] = [await redis_client.get(name) for name in names]
    assert b"[EMAIL_1]" in kept and b"@example" not in kept


async def test_the_allowed_models_of_a_key_and_its_user_hold_for_a_routes_steps(
    gateway: Gateway, upstream: Upstream
) -> None:
    fake, root = await upstream()
    setting_id = await setting_at(gateway, "openai", root)
    raw, key_id = await key_with(gateway, setting_id, allowedModels=[CHEAP])
    dear, _ = await create_route(gateway, [step("openai", setting_id, DEAR)], [key_id])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        # The body names a model the key may use; the route's one step calls another.
        await client(gateway, raw, dear).chat.completions.create(model=CHEAP, messages=HELLO)
    assert refused.value.code == "model_not_allowed"
    assert chat_calls(fake) == 0
    # A step the key may not take is passed over for the next one.
    both, _ = await create_route(
        gateway, [step("openai", setting_id, DEAR), step("openai", setting_id, CHEAP)], [key_id]
    )
    answer = await client(gateway, raw, both).chat.completions.with_raw_response.create(
        model=CHEAP, messages=HELLO
    )
    assert answer.headers["x-route-step"] == "1"
    # The call's user is held to its own allowedModels on the steps too.
    other_raw, other_key = await key_with(gateway, setting_id)
    created = await gateway.keymgmt.post(
        "/api/users", json={"userId": "ursula", "keyIds": [other_key], "allowedModels": [DEAR]}
    )
    user_id = (await created.json())["id"]
    await until(lambda: all(p.app[USERS].by_id(user_id) for p in gateway.proxies))
    cheap, _ = await create_route(gateway, [step("openai", setting_id, CHEAP)], [other_key])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client(gateway, other_raw, cheap).chat.completions.create(
            model=DEAR, messages=HELLO, user="ursula"
        )
    assert refused.value.code == "model_not_allowed" and "user" in refused.value.message
    assert chat_calls(fake) == 1
