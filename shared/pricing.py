"""Per-token prices: genai-prices, overridden or extended by PRICING_FILE, resolved once a model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import orjson
from genai_prices import Usage, calc_price

from shared.config import ConfigError

log = logging.getLogger("gateway.pricing")

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token."""

    input: float
    output: float
    cached_input: float
    training: float | None = None  # per trained token of a fine-tuning job; None: not known

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        return (
            (prompt_tokens - cached) * self.input
            + cached * self.cached_input
            + completion_tokens * self.output
        )


FREE = Rates(0.0, 0.0, 0.0)


def _library_rates(model: str) -> Rates | None:
    try:
        fresh = calc_price(
            Usage(input_tokens=_MILLION, output_tokens=_MILLION), model, provider_id="openai"
        )
        cached = calc_price(
            Usage(input_tokens=_MILLION, cache_read_tokens=_MILLION), model, provider_id="openai"
        )
    except LookupError:
        return None
    return Rates(
        input=float(fresh.input_price) / _MILLION,
        output=float(fresh.output_price) / _MILLION,
        cached_input=float(cached.input_price) / _MILLION,
    )


def load_overrides(path: str) -> dict[str, Rates]:
    """PRICING_FILE, in the field names of the LiteLLM price map."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise ConfigError(f"PRICING_FILE: cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError("PRICING_FILE: must be a JSON object of model name to prices")
    overrides = {}
    for model, prices in document.items():
        try:
            input_cost = float(prices["input_cost_per_token"])
            output_cost = float(prices.get("output_cost_per_token", 0.0))
            cached_cost = float(prices.get("cache_read_input_token_cost", input_cost))
            training = prices.get("training_cost_per_token")
            training_cost = None if training is None else float(training)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ConfigError(
                f"PRICING_FILE: {model!r} needs a numeric input_cost_per_token "
                "(and optionally output_cost_per_token, cache_read_input_token_cost, "
                "training_cost_per_token)"
            ) from None
        if min(input_cost, output_cost, cached_cost, training_cost or 0.0) < 0:
            raise ConfigError(f"PRICING_FILE: {model!r} has a negative price")
        overrides[model] = Rates(input_cost, output_cost, cached_cost, training_cost)
    return overrides


class Pricing:
    def __init__(self, overrides: dict[str, Rates] | None = None) -> None:
        self._rates: dict[str, Rates | None] = dict(overrides or {})
        self.unpriced: set[str] = set()

    @classmethod
    def from_file(cls, path: str) -> Pricing:
        return cls(load_overrides(path) if path else None)

    def rates(self, model: str) -> Rates | None:
        """The model's rates, or None (billed 0) for a model no price is known for."""
        try:
            return self._rates[model]
        except KeyError:
            pass
        rates = _library_rates(model) if model else None
        self._rates[model] = rates
        if rates is None:
            self.unpriced.add(model)
            log.warning("no price known for model %r: its calls are served and billed 0", model)
        return rates
