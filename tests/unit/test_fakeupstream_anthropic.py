"""The fake's Anthropic Messages API, driven by the official anthropic SDK."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.fakeupstream import FAKE_UPSTREAM, FakeUpstream, create_fake_upstream
from proxy.fakeupstream.anthropic import OVERLOADED, OVERLOADED_MID_STREAM, RATE_LIMITED

REPLY = "Hello from the fake upstream."
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello please"}]  # 3 words + 3
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def app() -> web.Application:
    return create_fake_upstream()


@pytest.fixture
def fake(app: web.Application) -> FakeUpstream:
    return app[FAKE_UPSTREAM]


@pytest.fixture
async def base_url(app: web.Application, aiohttp_server: ServerFactory) -> str:
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def sdk(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key="sk-ant-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def sync_sdk() -> Iterator[tuple[anthropic.Anthropic, FakeUpstream]]:
    """A sync client needs a server on another loop: the fake runs in a thread of its own."""
    app = create_fake_upstream()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-test", max_retries=0
    )
    try:
        yield client, app[FAKE_UPSTREAM]
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture
async def http(app: web.Application, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(app)


async def test_message_non_streamed(sdk: anthropic.AsyncAnthropic, fake: FakeUpstream) -> None:
    message = await sdk.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=100, messages=MESSAGES
    )
    assert message.model == "claude-sonnet-4-20250514"
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (6, 5)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    assert message._request_id is not None and message._request_id.startswith("req_")
    recorded = fake.recorded[-1]
    assert recorded.path == "/v1/messages"
    assert recorded.headers["authorization"] == "Bearer sk-ant-test"  # the SDK's way since 2.0
    assert recorded.headers["anthropic-version"]


def test_sync_client_streamed_and_not(
    sync_sdk: tuple[anthropic.Anthropic, FakeUpstream],
) -> None:
    client, fake = sync_sdk
    whole = client.messages.create(
        model="claude-3-5-haiku-20241022", max_tokens=3, messages=MESSAGES
    )
    assert (whole.content[0].type, whole.stop_reason) == ("text", "max_tokens")
    with client.messages.stream(
        model="claude-3-5-haiku-20241022",
        max_tokens=3,
        messages=MESSAGES,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the"
    assert final.usage == whole.usage
    assert final.stop_reason == "max_tokens"
    assert fake.recorded[-1].headers["anthropic-beta"] == "prompt-caching-2024-07-31"


async def test_stream_has_every_event_type_and_matches_the_json_answer(
    sdk: anthropic.AsyncAnthropic,
) -> None:
    kwargs: dict[str, Any] = {"model": "claude-sonnet-4-20250514", "max_tokens": 50}
    whole = await sdk.messages.create(messages=MESSAGES, **kwargs)
    stream = await sdk.messages.create(messages=MESSAGES, stream=True, **kwargs)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # ping is read and skipped by the SDK
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.input_tokens == whole.usage.input_tokens
    assert start.message.usage.output_tokens == 1
    assert delta.usage.output_tokens == whole.usage.output_tokens == 5
    assert delta.usage.input_tokens == whole.usage.input_tokens


async def test_ping_is_sent(http: TestClient) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True}
    response = await http.post("/v1/messages", json=body, headers=HEADERS)
    text = await response.text()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert 'event: ping\ndata: {"type":"ping"}\n\n' in text
    assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_cache_control_breakpoints(sdk: anthropic.AsyncAnthropic) -> None:
    ephemeral: Any = {"type": "ephemeral"}
    system: Any = [
        {"type": "text", "text": "one two three four", "cache_control": ephemeral},  # 4
        {"type": "text", "text": "five six"},  # 2
    ]
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a b c", "cache_control": ephemeral},  # 3 + 3
                {"type": "text", "text": "d e"},  # 2
            ],
        }
    ]
    message = await sdk.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=10, system=system, messages=messages
    )
    usage = message.usage
    # Read up to the first breakpoint (4), written from there to the last (2 + 3 + 3 = 8).
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (4, 8)
    assert usage.input_tokens == 2
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 8
    count = await sdk.messages.count_tokens(
        model="claude-sonnet-4-20250514", system=system, messages=messages
    )
    assert count.input_tokens == 4 + 8 + 2


async def test_one_breakpoint_is_all_written(sdk: anthropic.AsyncAnthropic) -> None:
    tools: Any = [
        {
            "name": "lookup",
            "description": "Look a word up",  # 3 + 4
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    message = await sdk.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=10, tools=tools, messages=MESSAGES
    )
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 7)
    assert usage.input_tokens == 6


async def test_tool_use_streamed_and_not(sdk: anthropic.AsyncAnthropic) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]
    messages: Any = [{"role": "user", "content": "Please call a tool"}]
    kwargs: dict[str, Any] = {"model": "claude-sonnet-4-20250514", "max_tokens": 100}
    whole = await sdk.messages.create(tools=tools, messages=messages, **kwargs)
    assert whole.stop_reason == "tool_use"
    block = whole.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("lookup", {"query": "fake"})
    assert block.id.startswith("toolu_")
    assert whole.usage.output_tokens == 5
    async with sdk.messages.stream(tools=tools, messages=messages, **kwargs) as stream:
        final = await stream.get_final_message()
    streamed = final.content[0]
    assert streamed.type == "tool_use" and streamed.input == {"query": "fake"}
    assert final.usage == whole.usage


async def test_tools_without_the_trigger_answer_text(sdk: anthropic.AsyncAnthropic) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]
    message = await sdk.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=100, tools=tools, messages=MESSAGES
    )
    assert message.content[0].type == "text"


async def test_overloaded_mid_stream(sdk: anthropic.AsyncAnthropic) -> None:
    messages: Any = [{"role": "user", "content": f"hi {OVERLOADED_MID_STREAM}"}]
    stream = await sdk.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=100, messages=messages, stream=True
    )
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        async for event in stream:
            seen.append(event.type)
    assert seen[:2] == ["message_start", "content_block_start"]
    assert seen.count("content_block_delta") == 2
    assert "message_delta" not in seen
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    # Not streamed, the same request is a 529.
    with pytest.raises(anthropic.InternalServerError) as whole:
        await sdk.messages.create(
            model="claude-sonnet-4-20250514", max_tokens=100, messages=messages
        )
    assert whole.value.status_code == 529


@pytest.mark.parametrize(
    ("trigger", "status", "error_type", "error"),
    [
        (RATE_LIMITED, 429, "rate_limit_error", anthropic.RateLimitError),
        (OVERLOADED, 529, "overloaded_error", anthropic.InternalServerError),
    ],
)
async def test_fault_triggers(
    sdk: anthropic.AsyncAnthropic,
    trigger: str,
    status: int,
    error_type: str,
    error: type[anthropic.APIStatusError],
) -> None:
    messages: Any = [{"role": "user", "content": f"hi {trigger}"}]
    with pytest.raises(error) as raised:
        await sdk.messages.create(model="claude-sonnet-4-20250514", max_tokens=5, messages=messages)
    assert raised.value.status_code == status
    body: Any = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == error_type


async def test_the_sdk_retries_an_overload(base_url: str, fake: FakeUpstream) -> None:
    messages: Any = [{"role": "user", "content": f"hi {OVERLOADED}"}]
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key="k", max_retries=1) as client:
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(model="m", max_tokens=5, messages=messages)
    assert [r.path for r in fake.recorded] == ["/v1/messages"] * 2


async def test_a_missing_key_is_an_authentication_error(base_url: str) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=base_url,
        api_key="unused",
        max_retries=0,
        default_headers={"Authorization": anthropic.omit},
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    body: Any = raised.value.body
    assert body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (
            {"x-api-key": "k"},
            {"model": "m", "max_tokens": 5, "messages": []},
            400,
            "anthropic-version",
        ),
        (HEADERS, {"model": "m", "messages": MESSAGES}, 400, "max_tokens"),
        (HEADERS, {"model": "m", "max_tokens": 0, "messages": MESSAGES}, 400, "max_tokens"),
        (HEADERS, {"max_tokens": 5, "messages": MESSAGES}, 400, "model"),
        ({"anthropic-version": "2023-06-01"}, {}, 401, "x-api-key"),
        ({"anthropic-version": "1", "Authorization": "Bearer "}, {}, 401, "x-api-key"),
    ],
)
async def test_bad_requests_in_anthropic_shape(
    http: TestClient, headers: dict[str, str], body: Any, status: int, message: str
) -> None:
    response = await http.post("/v1/messages", json=body, headers=headers)
    assert response.status == status
    answer = await response.json()
    assert answer["type"] == "error"
    expected = "invalid_request_error" if status == 400 else "authentication_error"
    assert answer["error"]["type"] == expected
    assert message in answer["error"]["message"]
    assert "request-id" in response.headers


async def test_the_key_in_x_api_key(http: TestClient, fake: FakeUpstream) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": MESSAGES}
    response = await http.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status == 200
    assert fake.recorded[-1].headers["x-api-key"] == "sk-ant-test"
    assert fake.recorded[-1].headers["anthropic-version"] == "2023-06-01"


async def test_malformed_json_is_an_invalid_request(http: TestClient) -> None:
    response = await http.post("/v1/messages", data=b"{nope", headers=HEADERS)
    assert response.status == 400
    assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_fail_status_answers_in_anthropic_shape(http: TestClient, fake: FakeUpstream) -> None:
    fake.options.fail_status = 403
    response = await http.post("/v1/messages", json={}, headers=HEADERS)
    assert response.status == 403
    assert (await response.json())["error"]["type"] == "permission_error"
    openai_style = await http.post("/v1/chat/completions", json={})
    assert "error" in await openai_style.json()


async def test_models_list_pages_and_retrieve(sdk: anthropic.AsyncAnthropic) -> None:
    everything = [model.id async for model in sdk.models.list(limit=1)]  # page by page
    assert everything == [
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022",
    ]
    page = await sdk.models.list(limit=2)
    assert (page.has_more, page.first_id, page.last_id) == (
        True,
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-20250219",
    )
    before = await sdk.models.list(before_id="claude-3-5-haiku-20241022", limit=1)
    assert [model.id for model in before.data] == ["claude-3-7-sonnet-20250219"]
    assert before.has_more
    model = await sdk.models.retrieve("claude-3-5-haiku-20241022")
    assert (model.type, model.display_name) == ("model", "Claude Haiku 3.5")
    with pytest.raises(anthropic.NotFoundError):
        await sdk.models.retrieve("claude-nope")


async def test_models_without_anthropic_version_are_openai_models(http: TestClient) -> None:
    response = await http.get("/v1/models")
    assert (await response.json())["object"] == "list"
    anthropic_models = await http.get("/v1/models", headers=HEADERS)
    assert "has_more" in await anthropic_models.json()
