"""Prices: genai-prices, overridden or extended by PRICING_FILE, resolved once a model.

Per token (text, cached, audio and image tokens), per second of audio, per character of speech
input, and per image for the image models the library has no prices for.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from genai_prices import Usage, calc_price

from shared.config import ConfigError
from shared.logs import Throttle
from shared.tokens import image_size

log = logging.getLogger("gateway.pricing")

_MILLION = 1_000_000
UNPRICED_KEPT = 1024  # unknown names remembered (clients choose them: a bound, not a set)
PRICED_KEPT = 4096  # names the price library resolved, kept for their next call
WARNING_INTERVAL = 60.0  # seconds between two "no price known" lines

# Official per-image prices (openai.com/api/pricing) that the library lacks, named as in the
# LiteLLM price map: "<quality>/<width>-x-<height>/<model>", or without the quality.
IMAGE_PRICES = {
    "256-x-256/dall-e-2": 0.016,
    "512-x-512/dall-e-2": 0.018,
    "1024-x-1024/dall-e-2": 0.02,
    "standard/1024-x-1024/dall-e-3": 0.04,
    "standard/1024-x-1792/dall-e-3": 0.08,
    "standard/1792-x-1024/dall-e-3": 0.08,
    "hd/1024-x-1024/dall-e-3": 0.08,
    "hd/1024-x-1792/dall-e-3": 0.12,
    "hd/1792-x-1024/dall-e-3": 0.12,
}


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token, second, character, image or pixel."""

    input: float
    output: float
    cached_input: float
    input_audio: float | None = None  # None: at the text price
    output_audio: float | None = None
    input_image: float | None = None
    output_image: float | None = None
    per_second: float = 0.0
    per_character: float = 0.0
    per_image: float | None = None  # None: not priced by the image
    per_pixel: float | None = None
    training: float | None = None  # per trained token of a fine-tuning job; None: not known
    # Per token written to a prompt cache (Anthropic's cache_creation_input_tokens). None: at
    # the input price, as genai-prices and LiteLLM charge a model that has no write price.
    cache_write: float | None = None

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        *,
        audio_tokens: int = 0,
        image_tokens: int = 0,
        output_audio_tokens: int = 0,
        output_image_tokens: int = 0,
        seconds: float = 0.0,
        characters: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """Token counts are totals: the audio, image, cached (cache reads) and cache-write
        tokens are parts of them."""
        cached = _part(cached_tokens, prompt_tokens)
        if not (
            audio_tokens or image_tokens or output_audio_tokens or output_image_tokens
        ) and not (seconds or characters or cache_write_tokens):  # text only: most calls
            return (
                (prompt_tokens - cached) * self.input
                + cached * self.cached_input
                + completion_tokens * self.output
            )
        written = _part(cache_write_tokens, prompt_tokens - cached)
        audio = _part(audio_tokens, prompt_tokens - cached - written)
        image = _part(image_tokens, prompt_tokens - cached - written - audio)
        output_audio = _part(output_audio_tokens, completion_tokens)
        output_image = _part(output_image_tokens, completion_tokens - output_audio)
        return (
            (prompt_tokens - cached - written - audio - image) * self.input
            + cached * self.cached_input
            + written * price_or(self.cache_write, self.input)
            + audio * price_or(self.input_audio, self.input)
            + image * price_or(self.input_image, self.input)
            + (completion_tokens - output_audio - output_image) * self.output
            + output_audio * price_or(self.output_audio, self.output)
            + output_image * price_or(self.output_image, self.output)
            + max(seconds, 0.0) * self.per_second
            + max(characters, 0) * self.per_character
        )

    def image_price(self, width: int, height: int) -> float | None:
        if self.per_image is not None:
            return self.per_image
        return None if self.per_pixel is None else self.per_pixel * width * height


def _part(tokens: int, of: int) -> int:
    return min(max(tokens, 0), max(of, 0))


def price_or(price: float | None, fallback: float) -> float:
    return fallback if price is None else price


def _library_rates(model: str, provider: str | None) -> Rates | None:
    try:
        fresh = calc_price(
            Usage(input_tokens=_MILLION, output_tokens=_MILLION), model, provider_id=provider
        )
    except LookupError:
        return None

    def total(**usage: int) -> float:
        return float(calc_price(Usage(**usage), model, provider_id=provider).total_price)

    def per_token(**usage: int) -> float:
        return total(**usage) / _MILLION

    return Rates(
        input=float(fresh.input_price) / _MILLION,
        output=float(fresh.output_price) / _MILLION,
        cached_input=per_token(input_tokens=_MILLION, cache_read_tokens=_MILLION),
        input_audio=per_token(input_tokens=_MILLION, input_audio_tokens=_MILLION),
        output_audio=per_token(output_tokens=_MILLION, output_audio_tokens=_MILLION),
        input_image=per_token(input_tokens=_MILLION, input_image_tokens=_MILLION),
        output_image=per_token(output_tokens=_MILLION, output_image_tokens=_MILLION),
        per_second=total(audio_seconds=3600) / 3600,
        per_character=per_token(input_characters=_MILLION),
        cache_write=per_token(input_tokens=_MILLION, cache_write_tokens=_MILLION),
    )


# PRICING_FILE's fields (the LiteLLM price map's names) and the Rates field each one sets.
TOKEN_FIELDS = {
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "input_cost_per_audio_token": "input_audio",
    "output_cost_per_audio_token": "output_audio",
    "input_cost_per_image_token": "input_image",
    "output_cost_per_image_token": "output_image",
    "training_cost_per_token": "training",
}
UNIT_FIELDS = {
    "input_cost_per_second": "per_second",
    "input_cost_per_character": "per_character",
    "output_cost_per_image": "per_image",
    "input_cost_per_image": "per_image",
    "input_cost_per_pixel": "per_pixel",
}


def _number(model: str, name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"PRICING_FILE: {model!r} {name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"PRICING_FILE: {model!r} {name} must be finite, not {value!r}")
    if number < 0:
        raise ConfigError(f"PRICING_FILE: {model!r} has a negative price ({name})")
    return number


def _override(model: str, prices: Any) -> Rates:
    if not isinstance(prices, dict):
        raise ConfigError(f"PRICING_FILE: {model!r} must be an object of prices")
    given = {
        target: _number(model, name, prices[name])
        for name, target in (*UNIT_FIELDS.items(), *TOKEN_FIELDS.items())
        if name in prices
    }
    if "input_cost_per_token" in prices:
        given["input"] = _number(model, "input_cost_per_token", prices["input_cost_per_token"])
    elif not given.keys() & set(UNIT_FIELDS.values()):
        raise ConfigError(
            f"PRICING_FILE: {model!r} needs a numeric input_cost_per_token "
            "(or a price per second, character, image or pixel)"
        )
    given.setdefault("input", 0.0)
    given.setdefault("output", 0.0)
    given.setdefault("cached_input", given["input"])
    return Rates(**given)


def load_overrides(path: str) -> dict[str, Rates]:
    """PRICING_FILE, in the field names of the LiteLLM price map."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise ConfigError(f"PRICING_FILE: cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError("PRICING_FILE: must be a JSON object of model name to prices")
    return {model: _override(model, prices) for model, prices in document.items()}


class Pricing:
    def __init__(
        self,
        overrides: dict[str, Rates] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        built_in = {name: Rates(0.0, 0.0, 0.0, per_image=usd) for name, usd in IMAGE_PRICES.items()}
        self._rates: dict[str, Rates] = {**built_in, **(overrides or {})}
        self._library: OrderedDict[str, Rates] = OrderedDict()  # least recently asked first
        self.unpriced: OrderedDict[str, None] = OrderedDict()  # least recently asked first
        self._warning = Throttle(WARNING_INTERVAL, clock)
        self._held_back = 0

    @classmethod
    def from_file(cls, path: str) -> Pricing:
        return cls(load_overrides(path) if path else None)

    def rates(self, model: str, provider: str | None = "openai") -> Rates | None:
        """The model's rates at `provider` (its id in genai-prices; None: whichever serves the
        model), or None for a model no price is known for. PRICING_FILE's prices hold for a
        model at every provider."""
        return self._lookup(model, warn=True, provider=provider)

    def image_price(self, model: str, size: str, quality: str) -> float | None:
        """USD per image of `size` ("1024x1024") and `quality`, for a model priced by the image."""
        dimensions = image_size(size)
        if dimensions is None:
            return None
        width, height = dimensions
        for name in (f"{quality}/{width}-x-{height}/{model}", f"{width}-x-{height}/{model}", model):
            rates = self._lookup(name, warn=False)
            price = rates.image_price(width, height) if rates is not None else None
            if price is not None:
                return price
        return None

    def _lookup(self, name: str, warn: bool, provider: str | None = "openai") -> Rates | None:
        found = self._rates.get(name)
        if found is not None:
            return found
        # Remembered as LiteLLM names them: "gpt-4o", "anthropic/claude-sonnet-4".
        key = name if provider == "openai" else f"{provider}/{name}"
        found = self._library.get(key)
        if found is not None:
            self._library.move_to_end(key)
            return found
        if key in self.unpriced:
            self.unpriced.move_to_end(key)
            return None
        rates = _library_rates(name, provider) if name else None
        if rates is not None:
            # The library matches names by prefix and pattern too: clients can mint them freely.
            self._library[key] = rates
            if len(self._library) > PRICED_KEPT:
                self._library.popitem(last=False)
            return rates
        self.unpriced[key] = None
        if len(self.unpriced) > UNPRICED_KEPT:
            self.unpriced.popitem(last=False)
        if warn:
            self._warn_unpriced(key)
        return None

    def _warn_unpriced(self, model: str) -> None:
        if not self._warning.due():
            self._held_back += 1
            return
        held_back, self._held_back = self._held_back, 0
        others = (
            f" (and for {held_back} other models since the last such line)" if held_back else ""
        )
        log.warning(
            "no price known for model %r%s: billed 0, refused for keys with a cost limit",
            model,
            others,
        )
