"""What a metered call costs, and the most it may cost, by the way its endpoint is billed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from proxy.calls import Call
from proxy.endpoints import Billing
from proxy.errors import endpoint_not_metered, model_not_priced
from proxy.metering import Usage
from shared import tokens
from shared.jsonutil import positive_int
from shared.pricing import Pricing, Rates, price_or

# Transcription answers that carry their usage (or duration); text, srt and vtt do not.
USAGE_FORMATS = frozenset({"json", "verbose_json", "diarized_json"})


def most_usd(call: Call, pricing: Pricing) -> float:
    """The call's reservation, for a key with a cost limit: refused when it cannot be priced."""
    if call.billing is None:
        raise endpoint_not_metered(call.endpoint, "the gateway has no price for this endpoint")
    if call.payload is None:
        return 0.0  # upstream does not bill it, or not within the call
    if not answer_has_usage(call):
        answer_format = call.payload.get("response_format")
        reason = f"a {answer_format!r} answer carries no usage (ask for json)"
        raise endpoint_not_metered(call.endpoint, reason)
    per_image = image_price(call, pricing)
    if per_image is not None:
        return per_image
    rates = rates_of(call, call.model, pricing)
    if rates is None:
        raise model_not_priced(call.model)
    return bound(call, rates)


def cost_usd(call: Call, pricing: Pricing) -> float | None:
    """What a successful metered call cost; None when no price is known for its model."""
    per_image = image_price(call, pricing)
    if per_image is not None:
        return per_image
    rates = rates_of(call, call.reported_model, pricing) if call.reported_model else None
    if rates is None:
        rates = rates_of(call, call.model, pricing)
    if rates is None:
        return None
    usage = call.usage
    if call.billing is Billing.TOKENS:
        return 0.0 if usage is None else token_cost(rates, usage)
    if not answer_has_usage(call):
        return 0.0  # forwarded unmetered: only a key without a cost limit gets here
    if usage is None or not (usage.prompt_tokens or usage.completion_tokens or usage.seconds):
        # Priced by the request (characters) or, with no usage in the answer, its most.
        return bound(call, rates)
    if call.billing is Billing.IMAGES and not usage.output_image_tokens:
        usage = replace(usage, output_image_tokens=usage.completion_tokens)
    elif call.billing is Billing.SPEECH and not usage.output_audio_tokens:
        usage = replace(usage, output_audio_tokens=usage.completion_tokens)
    return token_cost(rates, usage)


def rates_of(call: Call, model: str, pricing: Pricing) -> Rates | None:
    """The setting's costMap first, then PRICING_FILE, then the price library at the provider."""
    setting = call.target.setting
    if setting is not None and setting.cost_map:
        rates = cost_map_rates(setting.cost_map, call.endpoint, model)
        if rates is not None:
            return rates
    return pricing.rates(model, call.target.provider.price_provider)


def cost_map_rates(
    cost_map: Mapping[str, Mapping[str, float]], endpoint: str, model: str
) -> Rates | None:
    """A setting's prices in USD per 1,000 tokens; None when it names none for the model."""
    if endpoint == "embeddings":
        embeddings = cost_map.get("embeddingsCostPerModel", {}).get(model)
        return None if embeddings is None else Rates(embeddings / 1000, 0.0, embeddings / 1000)
    prompt = cost_map.get("promptCostPerModel", {}).get(model)
    completion = cost_map.get("completionCostPerModel", {}).get(model)
    if prompt is None and completion is None:
        return None
    prompt_per_token = (prompt or 0.0) / 1000
    return Rates(prompt_per_token, (completion or 0.0) / 1000, prompt_per_token)


def answer_has_usage(call: Call) -> bool:
    """False for a transcription asked for in text, srt or vtt: the answer says nothing of it."""
    if call.billing is not Billing.TRANSCRIPTION or call.stream or call.payload is None:
        return True
    return str(call.payload.get("response_format") or "json") in USAGE_FORMATS


def token_cost(rates: Rates, usage: Usage) -> float:
    if not (usage.audio_tokens or usage.image_tokens or usage.output_audio_tokens) and not (
        usage.output_image_tokens or usage.seconds or usage.cache_creation_tokens
    ):
        return rates.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    return rates.cost(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        audio_tokens=usage.audio_tokens,
        image_tokens=usage.image_tokens,
        output_audio_tokens=usage.output_audio_tokens,
        output_image_tokens=usage.output_image_tokens,
        seconds=usage.seconds,
        cache_write_tokens=usage.cache_creation_tokens,
    )


def image_price(call: Call, pricing: Pricing) -> float | None:
    """The price of the images asked for, for a model priced by the image (dall-e)."""
    if call.billing is not Billing.IMAGES or call.payload is None:
        return None
    payload = call.payload
    size, quality = _text(payload.get("size"), "1024x1024"), _text(payload.get("quality"), "")
    each = pricing.image_price(call.model, size, quality or "standard")
    return None if each is None else each * images_asked(payload)


def images_asked(payload: dict[str, Any]) -> int:
    n = payload.get("n")
    if isinstance(n, str) and n.isascii() and n.isdigit():
        n = int(n)
    return positive_int(n) or 1


def bound(call: Call, rates: Rates) -> float:
    """The most the call can cost at `rates`; an estimate where upstream bounds nothing."""
    payload = call.payload or {}
    input_most = max(rates.input, rates.input_audio or 0.0, rates.input_image or 0.0)
    if call.billing is Billing.TOKENS:
        output_most = max(rates.output, rates.output_audio or 0.0)
        return call.prompt_tokens_bound() * input_most + call.output_tokens_bound() * output_most
    if call.billing is Billing.IMAGES:
        size, quality = _text(payload.get("size"), "auto"), _text(payload.get("quality"), "high")
        images = images_asked(payload) * tokens.image_output_tokens_most(size, quality)
        prompt = tokens.utf8_bytes(_text(payload.get("prompt"), ""))
        return prompt * input_most + images * price_or(rates.output_image, rates.output)
    if call.billing is Billing.TRANSCRIPTION:
        audio_tokens = tokens.audio_tokens_most(call.upload_bytes)
        seconds = audio_tokens / tokens.AUDIO_TOKENS_PER_SECOND
        return audio_tokens * price_or(rates.input_audio, rates.input) + seconds * rates.per_second
    text = _text(payload.get("input"), "")  # speech
    prompt = tokens.utf8_bytes(text + _text(payload.get("instructions"), ""))
    audio = tokens.speech_tokens_estimate(text) * price_or(rates.output_audio, rates.output)
    return len(text) * rates.per_character + prompt * rates.input + audio


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default
