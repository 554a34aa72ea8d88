"""Prices from the library, PRICING_FILE overrides, and unknown models."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from shared import pricing as pricing_module
from shared.config import ConfigError
from shared.pricing import Pricing, Rates


def write(tmp_path: Path, document: object) -> str:
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps(document))
    return str(path)


def test_library_prices_per_token() -> None:
    rates = Pricing().rates("gpt-4o")
    # gpt-4o: 2.50 USD per million input tokens, 1.25 cached, 10 output.
    assert rates is not None
    assert (rates.input, rates.output, rates.cached_input) == (
        pytest.approx(2.5e-6),
        pytest.approx(1e-5),
        pytest.approx(1.25e-6),
    )


def test_cost_splits_cached_prompt_tokens() -> None:
    rates = Rates(input=1.0, output=10.0, cached_input=0.25)
    assert rates.cost(prompt_tokens=8, completion_tokens=2, cached_tokens=4) == 4 + 1 + 20
    assert rates.cost(prompt_tokens=2, completion_tokens=0, cached_tokens=5) == 0.5


def test_pricing_file_overrides_and_adds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "gpt-4o": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
            "house-model": {
                "input_cost_per_token": 3e-7,
                "output_cost_per_token": 6e-7,
                "cache_read_input_token_cost": 1e-7,
            },
        },
    )
    pricing = Pricing.from_file(path)
    assert pricing.rates("gpt-4o") == Rates(1e-6, 2e-6, 1e-6)
    assert pricing.rates("house-model") == Rates(3e-7, 6e-7, 1e-7)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"m": {"output_cost_per_token": 1}},
        {"m": {"input_cost_per_token": "cheap"}},
        {"m": {"input_cost_per_token": -1}},
    ],
)
def test_bad_pricing_file_is_a_config_error(tmp_path: Path, document: object) -> None:
    with pytest.raises(ConfigError, match="PRICING_FILE"):
        Pricing.from_file(write(tmp_path, document))


def test_missing_pricing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PRICING_FILE"):
        Pricing.from_file(str(tmp_path / "absent.json"))


def test_unknown_model_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        assert pricing.rates("model-nobody-sells") is None
        assert pricing.rates("model-nobody-sells") is None
    assert len(caplog.records) == 1
    assert list(pricing.unpriced) == ["model-nobody-sells"]


def test_unknown_models_are_remembered_within_a_bound() -> None:
    # Clients choose the model name: a fresh one per request must not grow the process.
    pricing = Pricing()
    for index in range(5000):
        assert pricing.rates(f"made-up-{index}") is None
    assert 0 < len(pricing.unpriced) <= 1024
    assert "made-up-4999" in pricing.unpriced


def test_names_the_library_prices_by_pattern_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pricing_module, "PRICED_KEPT", 10)
    pricing = Pricing()
    names = [f"gpt-4o-audio-preview-{index:04d}" for index in range(30)]
    assert all(pricing.rates(name) is not None for name in names)  # priced by prefix
    assert len(pricing._library) == 10
    assert names[-1] in pricing._library and names[0] not in pricing._library


def test_unknown_model_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        for index in range(1000):
            pricing.rates(f"made-up-{index}")
    assert len(caplog.records) == 1


def test_a_later_warning_counts_the_models_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    pricing = Pricing(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        for index in range(10):
            pricing.rates(f"made-up-{index}")
        now[0] += 61
        pricing.rates("made-up-last")
    assert len(caplog.records) == 2
    assert "'made-up-last'" in caplog.records[1].getMessage()
    assert "9 other" in caplog.records[1].getMessage()


@pytest.mark.parametrize(
    "text",
    [
        '{"m": {"input_cost_per_token": "nan"}}',
        '{"m": {"input_cost_per_token": "inf"}}',
        '{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": "-Infinity"}}',
        '{"m": {"input_cost_per_token": 1e-6, "cache_read_input_token_cost": "NaN"}}',
    ],
)
def test_non_finite_prices_are_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^PRICING_FILE: 'm' .*finite") as raised:
        Pricing.from_file(str(path))
    assert "\n" not in str(raised.value)


def test_library_prices_of_audio_and_image_units() -> None:
    pricing = Pricing()
    whisper, tts, image, transcribe = (
        pricing.rates(m) for m in ("whisper-1", "tts-1", "gpt-image-1", "gpt-4o-transcribe")
    )
    assert whisper is not None and whisper.per_second == pytest.approx(0.006 / 60)
    assert tts is not None and tts.per_character == pytest.approx(15e-6)
    # gpt-image-1: text in 5, image in 10, image out 40 USD per million tokens.
    assert image is not None
    assert image.cost(100, 1000, image_tokens=60, output_image_tokens=1000) == pytest.approx(
        (40 * 5 + 60 * 10 + 1000 * 40) / 1e6
    )
    assert transcribe is not None
    assert transcribe.cost(10, 5, audio_tokens=10) == pytest.approx((10 * 6 + 5 * 10) / 1e6)


def test_per_image_prices_by_size_and_quality() -> None:
    pricing = Pricing()
    assert pricing.image_price("dall-e-3", "1024x1024", "standard") == 0.04
    assert pricing.image_price("dall-e-3", "1792x1024", "hd") == 0.12
    assert pricing.image_price("dall-e-2", "512x512", "standard") == 0.018
    assert pricing.image_price("dall-e-3", "512x512", "standard") is None
    assert pricing.image_price("dall-e-3", "huge", "standard") is None
    assert pricing.image_price("gpt-image-1", "1024x1024", "high") is None  # priced by tokens


def test_pricing_file_sets_unit_prices_by_litellm_names(tmp_path: Path) -> None:
    pricing = Pricing.from_file(
        write(
            tmp_path,
            {
                "hd/1024-x-1024/dall-e-3": {"output_cost_per_image": 0.5},
                "1024-x-1024/house-painter": {"input_cost_per_pixel": 1e-8},
                "house-whisper": {"input_cost_per_second": 0.001},
                "house-tts": {"input_cost_per_character": 0},
                "house-image": {
                    "input_cost_per_token": 1e-6,
                    "input_cost_per_image_token": 2e-6,
                    "output_cost_per_image_token": 3e-6,
                },
            },
        )
    )
    assert pricing.image_price("dall-e-3", "1024x1024", "hd") == 0.5
    assert pricing.image_price("dall-e-3", "1024x1024", "standard") == 0.04
    assert pricing.image_price("house-painter", "1024x1024", "auto") == pytest.approx(
        1024 * 1024 * 1e-8
    )
    whisper = pricing.rates("house-whisper")
    assert whisper is not None and whisper.cost(0, 0, seconds=30) == pytest.approx(0.03)
    assert pricing.rates("house-tts") is not None  # a price of 0 is a known price
    image = pricing.rates("house-image")
    assert image is not None
    assert image.cost(10, 4, image_tokens=5, output_image_tokens=4) == pytest.approx(
        (5 * 1 + 5 * 2 + 4 * 3) / 1e6
    )


def test_pricing_file_takes_a_cache_write_price(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "house-claude": {
                "input_cost_per_token": 3e-6,
                "output_cost_per_token": 1.5e-5,
                "cache_read_input_token_cost": 3e-7,
                "cache_creation_input_token_cost": 3.75e-6,
            }
        },
    )
    rates = Pricing.from_file(path).rates("house-claude", provider="anthropic")
    assert rates == Rates(3e-6, 1.5e-5, 3e-7, cache_write=3.75e-6)
    assert rates.cost(10, 0, 2, cache_write_tokens=4) == pytest.approx(
        4 * 3e-6 + 2 * 3e-7 + 4 * 3.75e-6
    )
