"""The fake's Azure OpenAI layouts, driven by the official openai SDK's AzureOpenAI client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.fakeupstream import FAKE_UPSTREAM, FakeUpstream, create_fake_upstream

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello please"}]  # 3 words + 3
REPLY = "Hello from the fake upstream."
API_VERSION = "2024-10-21"

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def app() -> web.Application:
    return create_fake_upstream()


@pytest.fixture
def fake(app: web.Application) -> FakeUpstream:
    return app[FAKE_UPSTREAM]


@pytest.fixture
async def endpoint(app: web.Application, aiohttp_server: ServerFactory) -> str:
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


def azure(endpoint: str, api_version: str = API_VERSION) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=endpoint, api_key="azure-key", api_version=api_version, max_retries=0
    )


@pytest.fixture
async def sdk(endpoint: str) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with azure(endpoint) as client:
        yield client


@pytest.fixture
async def http(app: web.Application, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(app)


async def test_deployment_layout_non_streamed(
    sdk: openai.AsyncAzureOpenAI, fake: FakeUpstream
) -> None:
    completion = await sdk.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert completion.model == "gpt-4o-mini"  # the model served, not the deployment's name
    assert completion.choices[0].message.content == REPLY
    assert completion.usage is not None and completion.usage.prompt_tokens == 6
    extra: Any = completion.model_extra
    assert extra["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    choice_extra: Any = completion.choices[0].model_extra
    assert choice_extra["content_filter_results"]["violence"]["severity"] == "safe"
    recorded = fake.recorded[-1]
    assert recorded.path == "/openai/deployments/my-deployment/chat/completions"
    assert recorded.query == f"api-version={API_VERSION}"
    assert recorded.headers["api-key"] == "azure-key"


async def test_a_deployment_named_after_a_model_serves_it(sdk: openai.AsyncAzureOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.model == "gpt-4o"


async def test_stream_has_filter_chunks_and_usage_only_when_asked(
    sdk: openai.AsyncAzureOpenAI,
) -> None:
    stream = await sdk.chat.completions.create(
        model="my-deployment", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    first: Any = chunks[0]
    assert first.choices == [] and first.usage is None
    assert first.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert all(chunk.choices for chunk in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:]) == REPLY
    verdicts = [getattr(c.choices[0], "content_filter_results", None) for c in chunks[1:]]
    assert verdicts[0] == {} and verdicts[-1] == {}  # role and finish chunks
    assert all(verdict and verdict["hate"]["filtered"] is False for verdict in verdicts[1:-1])

    with_usage = await sdk.chat.completions.create(
        model="my-deployment",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage_chunks = [chunk async for chunk in with_usage]
    assert usage_chunks[0].choices == [] and usage_chunks[0].usage is None
    last = usage_chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 5)
    assert last.model == "gpt-4o-mini"


@pytest.mark.parametrize("api_version", ["2024-06-01", "2024-07-01-preview", "2024-02-15-preview"])
async def test_stream_options_on_an_old_api_version_is_refused(
    endpoint: str, api_version: str
) -> None:
    async with azure(endpoint, api_version) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model="d", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        assert "stream_options" in raised.value.message
        stream = await client.chat.completions.create(model="d", messages=MESSAGES, stream=True)
        assert [chunk async for chunk in stream]


@pytest.mark.parametrize(
    "api_version", ["2024-08-01-preview", "2024-09-01-preview", "2025-04-01-preview"]
)
async def test_stream_options_on_a_recent_api_version(endpoint: str, api_version: str) -> None:
    async with azure(endpoint, api_version) as client:
        stream = await client.chat.completions.create(
            model="d", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None


async def test_completions_and_embeddings(sdk: openai.AsyncAzureOpenAI, fake: FakeUpstream) -> None:
    completion = await sdk.completions.create(model="instruct", prompt="one two three")
    assert completion.model == "gpt-3.5-turbo-instruct"
    assert completion.choices[0].text == REPLY
    assert (completion.model_extra or {})["prompt_filter_results"]
    stream = await sdk.completions.create(model="instruct", prompt="one two", stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices == []
    assert "".join(c.choices[0].text for c in chunks[1:]) == REPLY
    embedding = await sdk.embeddings.create(model="embedder", input=["a b", "c"])
    assert embedding.model == "text-embedding-3-small"
    assert embedding.usage.prompt_tokens == 3
    assert fake.recorded[-1].path == "/openai/deployments/embedder/embeddings"


async def test_v1_layout(endpoint: str, fake: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{endpoint}/openai/v1/", api_key="azure-key", max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="my-deployment", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="my-deployment",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        embedding = await client.embeddings.create(model="text-embedding-3-small", input="a b")
    assert completion.model == "gpt-4o-mini"
    assert (completion.model_extra or {})["prompt_filter_results"]
    assert chunks[0].choices == [] and chunks[-1].usage == completion.usage
    assert embedding.model == "text-embedding-3-small"
    assert fake.recorded[0].path == "/openai/v1/chat/completions"
    assert fake.recorded[0].headers["authorization"] == "Bearer azure-key"


async def test_v1_layout_with_api_key_header(http: TestClient) -> None:
    body = {"model": "d", "messages": MESSAGES}
    response = await http.post(
        "/openai/v1/chat/completions?api-version=preview", json=body, headers={"api-key": "k"}
    )
    assert response.status == 200
    assert "apim-request-id" in response.headers


async def test_a_missing_key_is_a_401(endpoint: str) -> None:
    # An Entra token comes as Authorization: Bearer, which the fake does not take there.
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=endpoint, azure_ad_token="t", api_version=API_VERSION, max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="d", messages=MESSAGES)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/openai/deployments/d/chat/completions", {"api-key": "k"}, 400),  # no api-version
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {}, 401),
        ("/openai/deployments/d/chat/completions?api-version=soon", {"api-key": "k"}, 404),
        (
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",  # Bearer: not here
            {"Authorization": "Bearer k"},
            401,
        ),
        ("/openai/v1/chat/completions", {}, 401),
    ],
)
async def test_refusals(http: TestClient, path: str, headers: dict[str, str], status: int) -> None:
    response = await http.post(path, json={"model": "d", "messages": MESSAGES}, headers=headers)
    assert response.status == status
    assert (await response.json())["error"]["message"]


async def test_v1_needs_a_model(http: TestClient) -> None:
    response = await http.post(
        "/openai/v1/chat/completions", json={"messages": MESSAGES}, headers={"api-key": "k"}
    )
    assert response.status == 400
