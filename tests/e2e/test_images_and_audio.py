"""Images and audio through the gateway with the real openai SDK: metered, charged, reported.

The fake upstream's usage rules (proxy/fakeupstream/__init__.py) make every charge computable
by hand: prices are the library's (gpt-image-1, whisper-1, gpt-4o-transcribe, tts-1,
gpt-4o-mini-tts) and the official per-image ones (dall-e-3).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import Gateway

LIMIT = {"costLimitInUsd": 50}
WAV = bytes(64_000)  # the fake hears 2 s in it (32,000 bytes a second)
PROMPT = "a small red cat"  # 4 words


async def keyed(gateway: Gateway, **limits: Any) -> tuple[openai.AsyncOpenAI, str]:
    raw, key = await gateway.create_key(**limits)
    return gateway.client(raw), key["keyId"]


async def test_dall_e_is_charged_per_image_by_size_and_quality(gateway: Gateway) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    images = await client.images.generate(
        model="dall-e-3", prompt=PROMPT, size="1792x1024", quality="hd", n=2
    )
    assert images.data is not None and len(images.data) == 2
    assert await gateway.settled_cost(key_id, 0.24) == pytest.approx(2 * 0.12)


async def test_gpt_image_is_charged_by_its_token_usage(gateway: Gateway) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    images = await client.images.generate(model="gpt-image-1", prompt=PROMPT, quality="low", n=2)
    assert images.usage is not None
    # gpt-image-1: text in 5, image out 40 USD per million tokens; the fake's low image: 272.
    assert (images.usage.input_tokens, images.usage.output_tokens) == (4, 2 * 272)
    expected = (4 * 5 + 2 * 272 * 40) / 1e6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_an_image_edit_is_read_from_its_multipart_form_and_charged(
    gateway: Gateway,
) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    png = b"\x89PNG\r\n\x1a\n" + bytes(5000)
    edited = await client.images.edit(
        model="gpt-image-1", image=("cat.png", png, "image/png"), prompt=PROMPT, quality="medium"
    )
    assert edited.usage is not None
    # The fake: 100 image tokens an input image, a medium image is 1,056 tokens.
    assert edited.usage.input_tokens_details.image_tokens == 100
    expected = (4 * 5 + 100 * 10 + 1056 * 40) / 1e6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)
    sent = gateway.upstream.recorded[-1]
    assert sent.path == "/v1/images/edits" and png in sent.body  # the form went up unchanged


async def test_whisper_is_charged_by_the_second(gateway: Gateway) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    verbose = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV, "audio/wav"), response_format="verbose_json"
    )
    assert verbose.duration == 2.0
    with pytest.deprecated_call():  # the SDK marks translations deprecated; still billed
        plain = await client.audio.translations.create(
            model="whisper-1", file=("a.wav", WAV, "audio/wav")
        )
    assert plain.text
    expected = 2 * 2 * 0.006 / 60
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_gpt_4o_transcribe_is_charged_by_its_audio_and_text_tokens(
    gateway: Gateway,
) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    transcript = await client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", WAV, "audio/wav")
    )
    assert transcript.usage is not None and transcript.usage.type == "tokens"
    # The fake: 10 audio tokens a second, a token a word of its 5-word transcript.
    expected = (20 * 6 + 5 * 10) / 1e6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)


async def test_speech_is_charged_per_character_or_by_tokens(gateway: Gateway) -> None:
    client, key_id = await keyed(gateway, **LIMIT)
    text = "Hello from the gateway."
    speech = await client.audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert speech.content
    expected = len(text) * 15 / 1e6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)

    async with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=text, stream_format="sse"
    ) as streamed:
        assert b"speech.audio.done" in await streamed.read()
    # The fake reports 4 input tokens (words) and 4 audio tokens per chunk of 4 chunks.
    expected += (4 * 0.6 + 16 * 12) / 1e6
    assert await gateway.settled_cost(key_id, expected) == pytest.approx(expected)


async def post(gateway: Gateway, raw: str, path: str, body: bytes, content_type: str) -> Any:
    headers = {"Authorization": f"Bearer {raw}", "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.base_url() + "/" + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_what_cannot_be_priced_is_refused_for_a_key_with_a_cost_limit(
    gateway: Gateway,
) -> None:
    raw, _ = await gateway.create_key(**LIMIT)
    client = gateway.client(raw)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.post("/threads/runs", body={"assistant_id": "a"}, cast_to=object)
    assert refused.value.code == "endpoint_not_metered"
    with pytest.raises(openai.BadRequestError) as unpriced:
        await client.images.generate(model="painter-nobody-sells", prompt=PROMPT)
    assert unpriced.value.code == "model_not_priced"
    with pytest.raises(openai.PermissionDeniedError) as text_answer:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", WAV, "audio/wav"), response_format="text"
        )
    assert text_answer.value.code == "endpoint_not_metered"
    assert len(gateway.upstream.recorded) == 0  # nothing went upstream


async def test_without_a_cost_limit_what_cannot_be_priced_is_forwarded(gateway: Gateway) -> None:
    raw, key = await gateway.create_key(rateLimitOverTime=100, rateLimitUnit="m")
    client = gateway.client(raw)
    images = await client.images.generate(model="painter-nobody-sells", prompt=PROMPT)
    assert images.data
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV, "audio/wav"), response_format="text"
    )
    assert text
    assert (await gateway.spend(key["keyId"]))["costInUsd"] == 0


async def test_json_of_any_declared_type_is_metered_and_other_bodies_refused(
    gateway: Gateway,
) -> None:
    raw, key = await gateway.create_key(**LIMIT)
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    for content_type in ("application/vnd.a+json", "application/json; charset=utf-8", "text/plain"):
        status, answer = await post(gateway, raw, "chat/completions", body, content_type)
        assert status == 200, answer
    # gpt-4o-mini: 0.15 in, 0.6 out per million; the fake: 1 word + 3, and 5 words back.
    expected = 3 * (4 * 0.15 + 5 * 0.6) / 1e6
    assert await gateway.settled_cost(key["keyId"], expected) == pytest.approx(expected)
    status, answer = await post(gateway, raw, "chat/completions", b"model=gpt-4o", "text/plain")
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
