"""Prices from the library, PRICING_FILE overrides, and unknown models."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from shared.config import ConfigError
from shared.pricing import Pricing, Rates


def write(tmp_path: Path, document: object) -> str:
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps(document))
    return str(path)


def test_library_prices_per_token() -> None:
    rates = Pricing().rates("gpt-4o")
    # gpt-4o: 2.50 USD per million input tokens, 1.25 cached, 10 output.
    assert rates == Rates(
        input=pytest.approx(2.5e-6), output=pytest.approx(1e-5), cached_input=pytest.approx(1.25e-6)
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
    assert pricing.unpriced == {"model-nobody-sells"}
