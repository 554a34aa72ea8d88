"""What a call reserves: an upper bound of its cost, multimodal prompts and several choices too."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from proxy.admission import reservation_nano
from proxy.calls import CHAT, COMPLETIONS, RESPONSES, Call
from shared.limit_keys import to_nano
from shared.models import Key
from shared.pricing import Pricing
from tests.unit.targets import OPENAI_TARGET

KEY = Key(key_id="k", name="", key_hash="h", created_at=0, updated_at=0, cost_limit_in_usd=5)
PRICING = Pricing()


def reserved(endpoint: str, payload: dict[str, Any]) -> int:
    call = Call("r", KEY, OPENAI_TARGET, endpoint, b"", payload, model=payload["model"])
    return reservation_nano(call, PRICING)


def input_price(model: str) -> float:
    rates = PRICING.rates(model)
    assert rates is not None
    return rates.input


def image_message(detail: str = "high") -> dict[str, Any]:
    image = {"url": "https://example.com/cat.png", "detail": detail}
    return {"role": "user", "content": [{"type": "image_url", "image_url": image}]}


@pytest.mark.parametrize(
    ("model", "image_tokens"),
    # OpenAI's vision guide: 85 + 170 a tile for gpt-4o, 2,833 + 5,667 a tile for gpt-4o-mini,
    # at most 8 tiles of 512 px; 1,536 patches times 2.46 for gpt-4.1-nano.
    [("gpt-4o", 85 + 170 * 8), ("gpt-4o-mini", 2833 + 5667 * 8), ("gpt-4.1-nano", 3779)],
)
def test_an_image_reserves_its_most_tokens(model: str, image_tokens: int) -> None:
    payload = {"model": model, "messages": [image_message()]}
    assert reserved(CHAT, payload) >= to_nano(image_tokens * input_price(model))


def test_an_image_in_a_responses_input_reserves_its_most_tokens() -> None:
    part = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}
    payload = {"model": "gpt-4o", "input": [{"role": "user", "content": [part]}]}
    assert reserved(RESPONSES, payload) >= to_nano(1445 * input_price("gpt-4o"))


def test_input_audio_reserves_by_its_size() -> None:
    audio = base64.b64encode(bytes(200_000)).decode()  # about 25 s of 8 kbit/s speech at least
    part = {"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}}
    payload = {"model": "gpt-4o-audio-preview", "messages": [{"role": "user", "content": [part]}]}
    rates = PRICING.rates("gpt-4o-audio-preview")
    assert rates is not None
    # A token per 100 ms of audio; no accepted format carries a second in under 1,000 bytes.
    assert reserved(CHAT, payload) >= to_nano(200_000 / 100 * rates.input)


def test_a_file_reserves_by_its_size() -> None:
    data = "data:application/pdf;base64," + base64.b64encode(bytes(30_000)).decode()
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": data}}
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": [part]}]}
    assert reserved(CHAT, payload) >= to_nano(30_000 * input_price("gpt-4o"))


def test_several_choices_reserve_their_output_each() -> None:
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
    one, three = reserved(CHAT, base), reserved(CHAT, {**base, "n": 3})
    rates = PRICING.rates("gpt-4o")
    assert rates is not None
    assert three - one == pytest.approx(to_nano(2000 * rates.output), abs=2)


def test_best_of_reserves_every_completion_it_generates() -> None:
    base = {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 100}
    one = reserved(COMPLETIONS, base)
    five = reserved(COMPLETIONS, {**base, "n": 2, "best_of": 5})
    rates = PRICING.rates("gpt-3.5-turbo-instruct")
    assert rates is not None
    assert five - one == pytest.approx(to_nano(400 * rates.output), abs=2)
