"""The fake OpenAI upstream, checked through the real openai SDK where it matters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.fakeupstream import FAKE_UPSTREAM, FakeOptions, FakeUpstream, create_fake_upstream

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello please"}]  # 3 words + 3
PROMPT_TOKENS = 6
REPLY = "Hello from the fake upstream."

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def app() -> web.Application:
    return create_fake_upstream()


@pytest.fixture
def fake(app: web.Application) -> FakeUpstream:
    return app[FAKE_UPSTREAM]


@pytest.fixture
async def sdk(
    app: web.Application, aiohttp_server: ServerFactory
) -> AsyncIterator[openai.AsyncOpenAI]:
    server = await aiohttp_server(app)
    base_url = f"http://127.0.0.1:{server.port}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
async def http(app: web.Application, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(app)


async def test_chat_non_streamed(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (REPLY, "stop")
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 5, 11)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def _chat_stream(sdk: openai.AsyncOpenAI, **kwargs: Any) -> list[Any]:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


async def test_chat_streamed_usage_matches_non_streamed(sdk: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"max_completion_tokens": 3, "user": "cached"}
    whole = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)
    chunks = await _chat_stream(sdk, stream_options={"include_usage": True}, **kwargs)
    assert chunks[-1].choices == []
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].usage == whole.usage
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    assert whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == PROMPT_TOKENS // 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == "Hello from the"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason == "length"


async def test_chat_streamed_without_include_usage_has_no_usage(sdk: openai.AsyncOpenAI) -> None:
    chunks = await _chat_stream(sdk)
    assert len(chunks) == 1 + 5 + 1
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)


async def test_chat_tool_call(sdk: openai.AsyncOpenAI) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    messages: list[Any] = [{"role": "user", "content": "Please call a tool"}]
    whole = await sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    assert whole.choices[0].finish_reason == "tool_calls"
    call: Any = (whole.choices[0].message.tool_calls or [])[0]
    assert (call.function.name, call.function.arguments) == ("lookup", '{"query": "fake"}')
    stream = await sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=tools, stream=True
    )
    calls: list[Any] = [
        c.choices[0].delta.tool_calls[0] async for c in stream if c.choices[0].delta.tool_calls
    ]
    assert calls[0].function.name == "lookup"
    assert "".join(c.function.arguments for c in calls) == call.function.arguments


async def test_legacy_completions_usage_matches(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="one two three")
    assert whole.choices[0].text == REPLY
    stream = await sdk.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="one two three",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage == whole.usage
    assert whole.usage is not None and whole.usage.prompt_tokens == 3


async def test_embeddings_sdk_default_base64(sdk: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    result = await sdk.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert b'"encoding_format":"base64"' in fake.recorded[-1].body.replace(b" ", b"")
    assert [len(item.embedding) for item in result.data] == [8, 8]
    assert result.data[0].embedding != result.data[1].embedding
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (3, 3)
    floats = await sdk.embeddings.create(
        model="text-embedding-3-small", input=["a b", "c"], encoding_format="float"
    )
    assert [item.embedding for item in floats.data] == [item.embedding for item in result.data]


async def test_responses_streamed_and_not_agree(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.responses.create(
        model="gpt-4o-mini", input="Say hello", instructions="Be brief"
    )
    assert whole.output_text == REPLY
    assert whole.status == "completed"
    assert whole.usage is not None
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (2 + 3 + 2 + 3, 5)
    stream = await sdk.responses.create(
        model="gpt-4o-mini", input="Say hello", instructions="Be brief", stream=True
    )
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == REPLY
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage == whole.usage
    assert completed.response.output_text == REPLY


async def test_responses_stream_helper_accumulates(sdk: openai.AsyncOpenAI) -> None:
    async with sdk.responses.stream(model="gpt-4o-mini", input="hi") as stream:
        final = await stream.get_final_response()
    assert final.output_text == REPLY


async def test_responses_capped_is_incomplete(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=2)
    assert (whole.status, whole.output_text) == ("incomplete", "Hello from")
    assert whole.incomplete_details is not None
    # The SDK's stream helper has no final response without response.completed: read events.
    async with sdk.responses.stream(model="gpt-4o-mini", input="hi", max_output_tokens=2) as stream:
        events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage == whole.usage


async def test_file_upload_and_download(sdk: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    data = bytes(range(256)) * 3 + b"\r\n--not-a-boundary\r\n"
    uploaded = await sdk.files.create(file=("data.jsonl", data), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "data.jsonl",
        "batch",
    )
    assert uploaded.status == "processed"
    content = await sdk.files.content(uploaded.id)
    assert content.content == data
    assert (await sdk.files.retrieve(uploaded.id)).id == uploaded.id


async def test_audio(sdk: openai.AsyncOpenAI) -> None:
    speech = await sdk.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert len(speech.content) == 64 * 1024
    transcription = await sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.mp3", speech.content)
    )
    assert transcription.text == REPLY


async def test_models_moderations_images(sdk: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in sdk.models.list()]
    assert "gpt-4o-mini" in models
    assert (await sdk.models.retrieve("gpt-4o")).id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("no-such-model")
    moderation = await sdk.moderations.create(input=["a", "b"])
    assert [result.flagged for result in moderation.results] == [False, False]
    image = await sdk.images.generate(prompt="a cat", model="gpt-image-1")
    assert image.data is not None and image.data[0].b64_json


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, openai.AuthenticationError), (429, openai.RateLimitError), (500, openai.APIStatusError)],
)
async def test_fail_status(
    sdk: openai.AsyncOpenAI, fake: FakeUpstream, status: int, error: type[Exception]
) -> None:
    fake.options.fail_status = status
    with pytest.raises(error) as raised:
        await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert isinstance(raised.value, openai.APIStatusError)
    assert raised.value.status_code == status
    assert raised.value.request_id is not None and raised.value.request_id.startswith("req_")


async def test_a_refused_key_is_named_masked_like_the_real_api(http: TestClient) -> None:
    fake = http.app[FAKE_UPSTREAM]
    fake.options.fail_status = 401
    headers = {"Authorization": "Bearer sk-proj-0123456789abcdef"}
    response = await http.post("/v1/chat/completions", json={}, headers=headers)
    message = (await response.json())["error"]["message"]
    assert response.status == 401
    assert "sk-pr" + "*" * 15 + "cdef" in message
    assert "0123456789" not in message


async def test_report_usage_false(sdk: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.options.report_usage = False
    whole = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert whole.usage is None
    chunks = await _chat_stream(sdk, stream_options={"include_usage": True})
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    response = await sdk.responses.create(model="gpt-4o-mini", input="hi")
    assert response.usage is None


async def test_recording_and_headers(http: TestClient, fake: FakeUpstream) -> None:
    response = await http.post(
        "/v1/chat/completions?x=1",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": "Bearer sk-upstream"},
    )
    assert response.status == 200
    assert response.headers["x-request-id"].startswith("req_")
    for name in ("openai-processing-ms", "openai-version", "x-ratelimit-limit-requests"):
        assert name in response.headers
    recorded = fake.recorded[-1]
    assert (recorded.method, recorded.path, recorded.query) == (
        "POST",
        "/v1/chat/completions",
        "x=1",
    )
    assert recorded.headers["authorization"] == "Bearer sk-upstream"
    assert b'"messages"' in recorded.body


async def test_unknown_route_and_bad_json(http: TestClient) -> None:
    response = await http.get("/v1/nope")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "unknown_url"
    assert "x-request-id" in response.headers
    bad = await http.post("/v1/chat/completions", data=b"{not json")
    assert bad.status == 400
    assert (await bad.json())["error"]["type"] == "invalid_request_error"


async def test_stream_events_arrive_separately(http: TestClient, fake: FakeUpstream) -> None:
    fake.options.stream_interval = 0.005
    response = await http.post(
        "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    reads = [chunk async for chunk in response.content.iter_any()]
    assert len(reads) == 1 + 5 + 1 + 1  # role, content, finish, [DONE]
    assert reads[-1] == b"data: [DONE]\n\n"


async def test_options_at_creation(aiohttp_client: Any) -> None:
    options = FakeOptions(stream_chunks=7, latency=0.01, record=False)
    app = create_fake_upstream(options)
    client = await aiohttp_client(app)
    response = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == REPLY + " Hello from"
    assert body["usage"]["completion_tokens"] == 7
    assert response.headers["openai-processing-ms"] == "10"
    assert app[FAKE_UPSTREAM].recorded == []
