"""Anthropic's Messages API: `x-api-key` upstream, its own usage fields and error shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.anthropic_metering import MessageStreamMeter, usage_of_message
from proxy.endpoints import Billing
from proxy.errors import ProxyError, anthropic_shape
from proxy.metering import Usage
from proxy.providers.base import Meter, Provider
from shared import tokens
from shared.config import Settings
from shared.models import ProviderSetting

if TYPE_CHECKING:
    from proxy.calls import Call

# What a POST costs; any other POST (message batches, say) is one the gateway cannot price.
POST_BILLING = {"messages": Billing.TOKENS, "messages/count_tokens": Billing.FREE}


class Anthropic(Provider):
    name = "anthropic"
    price_provider = "anthropic"
    forwarded_headers = frozenset({"anthropic-version", "anthropic-beta"})
    wire_format = "anthropic"

    def billing(self, method: str, endpoint: str) -> Billing | None:
        return Billing.FREE if method != "POST" else POST_BILLING.get(endpoint)

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        root = setting.options.get("baseUrl") or settings.anthropic_base_url
        return root.rstrip("/") + "/v1"  # like ANTHROPIC_BASE_URL, the setting names the root

    def credential(self, setting: ProviderSetting) -> dict[str, str]:
        return {"x-api-key": setting.secret}

    def asks_stream_usage(self, call: Call) -> bool:
        return False  # every Messages stream reports its usage

    def usage_of_body(self, body: bytes) -> tuple[Usage | None, str]:
        return usage_of_message(body)

    def stream_meter(self, call: Call) -> Meter:
        return MessageStreamMeter(count=tokens.tiktoken_counter(call.model))

    def prompt_tokens(
        self, call: Call, payload: dict[str, Any], count: tokens.TextCounter, image_tokens: int
    ) -> int:
        return tokens.count_messages_prompt(payload, count, image_tokens)

    def error_response(self, error: ProxyError, request_id: str) -> web.Response:
        return error.response(request_id, anthropic_shape)
