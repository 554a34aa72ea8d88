"""Which endpoints are metered and how, what a key with a cost limit is refused, multipart forms."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy.admission import reservation_nano
from proxy.calls import Call, new_call
from proxy.costs import cost_usd, images_asked
from proxy.endpoints import Billing, billing_of
from proxy.errors import ProxyError
from proxy.metering import Usage, parse_usage, usage_of_body
from proxy.multipart import MalformedForm, read_form
from shared.limit_keys import to_nano
from shared.models import Key
from shared.pricing import Pricing
from tests.unit.targets import OPENAI_TARGET

LIMITED = Key(key_id="k", name="", key_hash="h", created_at=0, updated_at=0, cost_limit_in_usd=5)
UNLIMITED = Key(key_id="k", name="", key_hash="h", created_at=0, updated_at=0)
PRICING = Pricing()
BOUNDARY = "form-boundary"


@pytest.mark.parametrize(
    ("method", "endpoint", "billing"),
    [
        ("POST", "chat/completions", Billing.TOKENS),
        ("POST", "images/edits", Billing.IMAGES),
        ("POST", "audio/translations", Billing.TRANSCRIPTION),
        ("POST", "audio/speech", Billing.SPEECH),
        ("POST", "moderations", Billing.FREE),
        ("POST", "uploads/upload_abc/parts", Billing.FREE),
        ("POST", "batches", Billing.LATER),
        ("POST", "batches/batch_abc/cancel", Billing.FREE),
        ("POST", "fine_tuning/jobs", Billing.LATER),
        ("GET", "responses/resp_abc", Billing.FREE),
        ("DELETE", "files/file-abc", Billing.FREE),
        ("POST", "threads/runs", None),
        ("POST", "vector_stores", None),
        ("POST", "chat/completions/chatcmpl-1/extra", None),
    ],
)
def test_endpoints_are_billed_by_the_table(method: str, endpoint: str, billing: Billing) -> None:
    assert billing_of(method, endpoint) is billing


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    chunks = []
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(value + b"\r\n")
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def call_for(
    endpoint: str, body: bytes, content_type: str = "application/json", key: Key = LIMITED
) -> Call:
    request = make_mocked_request(
        "POST",
        f"/api/providers/openai/v1/{endpoint}",
        headers=CIMultiDict({"Content-Type": content_type}),
        match_info={"tail": endpoint},
    )
    return new_call(request, OPENAI_TARGET, key, body, "r")


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def test_a_multipart_form_is_read_and_forwarded_unchanged() -> None:
    audio = b"RIFF" + bytes(10_000) + b"\r\n--not-the-boundary"
    body = form(("model", None, b"whisper-1"), ("file", "a.wav", audio), ("stream", None, b"true"))
    call = call_for("audio/transcriptions", body, MULTIPART)
    assert call.body is body
    assert call.payload == {"model": "whisper-1", "stream": "true"}
    assert (call.model, call.stream, call.upload_bytes) == ("whisper-1", True, len(audio))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"no boundary here", MULTIPART),
        (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"'.encode(), MULTIPART),
        (b"", "multipart/form-data"),
    ],
)
def test_an_unreadable_form_is_a_400(body: bytes, content_type: str) -> None:
    with pytest.raises(ProxyError) as refused:
        call_for("images/edits", body, content_type)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")


def test_form_fields_too_long_to_matter_are_skipped() -> None:
    long_prompt = b"cat " * 2000
    read = read_form(form(("prompt", None, long_prompt), ("n", None, b"2")), MULTIPART)
    assert read.fields == {"n": "2"}
    with pytest.raises(MalformedForm):
        read_form(b"--x\r\n", "multipart/form-data; boundary=x")


def refusal(call: Call) -> tuple[int, str]:
    with pytest.raises(ProxyError) as refused:
        reservation_nano(call, PRICING)
    return refused.value.status, refused.value.code


def test_an_endpoint_the_gateway_cannot_price_is_refused_for_a_cost_limit_only() -> None:
    body = orjson.dumps({"assistant_id": "a"})
    assert refusal(call_for("threads/runs", body)) == (403, "endpoint_not_metered")
    assert reservation_nano(call_for("threads/runs", body, key=UNLIMITED), PRICING) == 0
    assert reservation_nano(call_for("batches", body), PRICING) == 0  # billed later, elsewhere


def test_a_model_without_a_price_is_refused_for_a_cost_limit_and_a_price_of_0_is_a_price(
    tmp_path: Path,
) -> None:
    body = orjson.dumps({"model": "house-model", "messages": []})
    assert refusal(call_for("chat/completions", body)) == (400, "model_not_priced")
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps({"house-model": {"input_cost_per_token": 0}}))
    assert reservation_nano(call_for("chat/completions", body), Pricing.from_file(str(path))) == 0


def test_a_transcription_answered_in_text_is_refused_for_a_cost_limit() -> None:
    body = form(
        ("model", None, b"whisper-1"), ("file", "a.wav", b"x"), ("response_format", None, b"srt")
    )
    assert refusal(call_for("audio/transcriptions", body, MULTIPART)) == (
        403,
        "endpoint_not_metered",
    )


def test_per_image_and_per_character_calls_reserve_and_cost_exactly_their_price() -> None:
    images = call_for(
        "images/generations",
        orjson.dumps({"model": "dall-e-3", "prompt": "cat", "size": "1024x1792", "n": 3}),
    )
    assert reservation_nano(images, PRICING) == to_nano(3 * 0.08)
    assert cost_usd(images, PRICING) == pytest.approx(3 * 0.08)
    speech = call_for("audio/speech", orjson.dumps({"model": "tts-1-hd", "input": "Grüße"}))
    assert reservation_nano(speech, PRICING) == to_nano(5 * 30e-6)
    assert cost_usd(speech, PRICING) == pytest.approx(5 * 30e-6)


def test_images_without_a_model_are_dall_e_2_as_upstream_does() -> None:
    call = call_for("images/generations", orjson.dumps({"prompt": "cat", "size": "256x256"}))
    assert reservation_nano(call, PRICING) == to_nano(0.016)


def test_a_gpt_image_reservation_covers_its_largest_answer() -> None:
    call = call_for("images/generations", orjson.dumps({"model": "gpt-image-1", "prompt": "cat"}))
    rates = PRICING.rates("gpt-image-1")
    assert rates is not None
    # Auto quality and size: a high 1536x1024 image, 6,240 tokens.
    assert reservation_nano(call, PRICING) >= to_nano(6240 * rates.output)
    call.usage = Usage(3, 272)  # a low square image, as reported
    assert cost_usd(call, PRICING) == pytest.approx((3 * 5 + 272 * 40) / 1e6)


def test_usage_of_audio_answers() -> None:
    seconds = usage_of_body(b'{"text": "hi", "usage": {"type": "duration", "seconds": 7}}')
    assert seconds == (Usage(seconds=7.0), "")
    verbose = usage_of_body(b'{"text": "hi", "duration": 8.5}')
    assert verbose == (Usage(seconds=8.5), "")
    tokens = parse_usage(
        {"input_tokens": 30, "input_token_details": {"audio_tokens": 20}, "output_tokens": 4}
    )
    assert tokens == Usage(30, 4, audio_tokens=20)
    chat = parse_usage(
        {
            "prompt_tokens": 12,
            "completion_tokens": 9,
            "prompt_tokens_details": {"audio_tokens": 10, "cached_tokens": 0},
            "completion_tokens_details": {"audio_tokens": 8},
        }
    )
    assert chat == Usage(12, 9, audio_tokens=10, output_audio_tokens=8)
    assert parse_usage({"type": "duration", "seconds": float("nan")}) == Usage()


def test_audio_tokens_in_a_chat_are_billed_at_the_audio_price() -> None:
    body = orjson.dumps({"model": "gpt-audio", "messages": []})
    call = call_for("chat/completions", body)
    call.usage = Usage(12, 9, audio_tokens=10, output_audio_tokens=8)
    # gpt-audio: text 2.5 / 10, audio 32 / 64 USD per million tokens.
    expected = (2 * 2.5 + 10 * 32 + 1 * 10 + 8 * 64) / 1e6
    assert cost_usd(call, PRICING) == pytest.approx(expected)


def test_binary_speech_of_a_token_model_is_billed_at_its_estimate() -> None:
    text = "Hello there"
    call = call_for("audio/speech", orjson.dumps({"model": "gpt-4o-mini-tts", "input": text}))
    # gpt-4o-mini-tts: 0.6 in, 12 out per million; input counted high (a token a byte), and
    # 1.5 audio tokens a character.
    expected = (len(text) * 0.6 + 17 * 12) / 1e6
    assert reservation_nano(call, PRICING) == to_nano(expected)
    assert cost_usd(call, PRICING) == pytest.approx(expected)  # the binary answer has no usage


def test_a_transcription_reserves_by_its_upload_size() -> None:
    audio = bytes(60_000)  # at least 8 kbit/s: at most 60 s, 600 audio tokens
    whisper = form(("model", None, b"whisper-1"), ("file", "a.mp3", audio))
    assert reservation_nano(call_for("audio/transcriptions", whisper, MULTIPART), PRICING) == (
        to_nano(60 * 0.006 / 60)
    )
    tokens = form(("model", None, b"gpt-4o-transcribe"), ("file", "a.mp3", audio))
    assert reservation_nano(call_for("audio/transcriptions", tokens, MULTIPART), PRICING) == (
        to_nano(600 * 6e-6)
    )


@pytest.mark.parametrize("n", ["\u00b2", "\u0663", "-1", "x", None, 0, True])
def test_an_image_count_python_cannot_read_as_a_count_asks_for_one(n: object) -> None:
    assert images_asked({"n": n}) == 1
