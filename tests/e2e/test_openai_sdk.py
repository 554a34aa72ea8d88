"""The real openai SDK, through the proxy, to a fake upstream."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tests.e2e.conftest import KEYS, Gateway

UPSTREAM_AUTH = "Bearer sk-upstream-secret"


def assert_upstream_saw_only_its_key(gateway: Gateway, client_key: str) -> None:
    assert gateway.upstream.recorded, "upstream saw no request"
    for seen in gateway.upstream.recorded:
        assert seen.headers["authorization"] == UPSTREAM_AUTH
        assert client_key not in str(seen.headers)
        assert client_key.encode() not in seen.body


async def test_chat_completion(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    completion = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    parsed = completion.parse()
    assert parsed.choices[0].message.content == "Hello from the fake upstream."
    assert parsed.usage is not None and parsed.usage.completion_tokens == 5
    assert completion.headers["x-request-id"]
    assert completion.headers["x-upstream-request-id"].startswith("req_")
    assert completion.headers["openai-processing-ms"] is not None
    assert_upstream_saw_only_its_key(gateway, raw)


async def test_chat_stream_relays_every_event(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    stream = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    # The proxy asked upstream for usage; a client that did not ask never sees that chunk.
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    sent = gateway.upstream.recorded[-1].body
    assert b'"include_usage":true' in sent


async def test_chat_stream_with_usage_requested_keeps_the_usage_chunk(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    stream = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_sync_client_in_thread(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()

    def call() -> tuple[str | None, str]:
        client = gateway.sync_client(raw)
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        streamed = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed)
        return completion.choices[0].message.content, text

    content, streamed_text = await asyncio.to_thread(call)
    assert content == streamed_text == "Hello from the fake upstream."


async def test_embeddings_models_moderations_and_images(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    embedding = await client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 8
    models = [model.id async for model in client.models.list()]
    assert "gpt-4o-mini" in models
    assert (await client.models.retrieve("gpt-4o")).id == "gpt-4o"
    moderation = await client.moderations.create(input="hello")
    assert moderation.results[0].flagged is False
    image = await client.images.generate(prompt="a dot", model="gpt-image-1")
    assert image.data and image.data[0].b64_json


async def test_responses_api(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    response = await client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert response.output_text == "Hello from the fake upstream."
    events = [
        event
        async for event in await client.responses.create(
            model="gpt-4o-mini", input="Say hello", stream=True
        )
    ]
    assert events[-1].type == "response.completed"


async def test_file_upload_and_binary_download(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    content = b'{"prompt": "x"}\n' * 5000
    uploaded = await client.files.create(file=("data.jsonl", content), purpose="batch")
    assert uploaded.bytes == len(content)
    downloaded = await client.files.content(uploaded.id)
    assert downloaded.content == content
    speech = await client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    audio = speech.content
    assert len(audio) == 64 * 1024
    transcription = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.mp3", audio)
    )
    assert transcription.text
    assert_upstream_saw_only_its_key(gateway, raw)


@pytest.mark.parametrize("header", ["api-key", "x-api-key"])
async def test_key_in_other_headers(gateway: Gateway, header: str) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client("unused", default_headers={"Authorization": "", header: raw})
    models = await client.models.list()
    assert models.data


async def test_unknown_key_is_an_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        await gateway.client("sk-nobody").models.list()
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert raised.value.type == "invalid_request_error"
    assert gateway.upstream.recorded == []


async def test_revoked_deleted_and_expired_keys_stop_working(gateway: Gateway) -> None:
    revoked, revoked_config = await gateway.create_key()
    deleted, deleted_config = await gateway.create_key()
    for raw in (revoked, deleted):
        assert (await gateway.client(raw).models.list()).data
    await gateway.keymgmt.patch(f"{KEYS}/{revoked_config['keyId']}", json={"revoked": True})
    await gateway.keymgmt.delete(f"{KEYS}/{deleted_config['keyId']}")
    await gateway.wait_for_refresh()
    for raw in (revoked, deleted):
        with pytest.raises(openai.AuthenticationError):
            await gateway.client(raw).models.list()


async def test_expiry_is_to_the_second(gateway: Gateway) -> None:
    raw, config = await gateway.create_key(ttl="2s")
    client = gateway.client(raw)
    while time.time() < config["expiresAt"] - 0.3:
        assert (await client.models.list()).data
        await asyncio.sleep(0.1)
    await asyncio.sleep(max(0.0, config["expiresAt"] + 0.05 - time.time()))
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()


async def test_upstream_errors_pass_through(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    gateway.upstream.options.fail_status = 503
    with pytest.raises(openai.APIStatusError) as raised:
        await gateway.client(raw).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 503
    assert raised.value.type == "server_error"


async def test_malformed_body_and_unknown_route(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    session = gateway.keymgmt.session
    headers = {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"}
    async with session.post(
        f"{gateway.base_url()}/chat/completions", data=b"{oops", headers=headers
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_json"
    async with session.get(str(gateway.proxies[0].make_url("/nope"))) as response:
        assert response.status == 404
        assert "error" in await response.json()
