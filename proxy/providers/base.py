"""What a provider adapter knows, with the OpenAI API's answers as the defaults.

An adapter knows only its vendor: where a call goes, with which credential, how usage reads in
its answers, and how its errors look. The request path asks it; it never asks for a name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from proxy.endpoints import Billing, billing_of
from proxy.errors import ProxyError
from proxy.metering import StreamMeter, Usage, usage_of_body
from proxy.paths import normalised_endpoint
from proxy.upstream import CredentialAlarm
from shared import tokens
from shared.config import Settings
from shared.models import ProviderSetting

if TYPE_CHECKING:
    from proxy.calls import Call

# Chat and completions streams carry their usage only when asked for it.
STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})


class Meter(Protocol):
    """Relays an event stream as it arrives and reads the call's usage out of it."""

    usage: Usage | None
    model: str

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def usage_when_cut(self, prompt_tokens: Callable[[], int]) -> Usage:
        """What a stream that ended without its usage is billed (counts: off the loop)."""


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """Where a key's call on a provider goes: one per setting version, built once."""

    provider: Provider
    setting: ProviderSetting | None  # None: the gateway's own OpenAI credential
    base_url: str  # what the route-relative upstream path is appended to
    credential: dict[str, str] = field(repr=False)  # the auth headers upstream wants
    alarm: CredentialAlarm = field(default_factory=CredentialAlarm)

    @property
    def setting_id(self) -> str:
        return self.setting.setting_id if self.setting is not None else ""

    @property
    def credential_source(self) -> str:
        if self.setting is None:
            return "OPENAI_API_KEY, OPENAI_ORGANIZATION and OPENAI_PROJECT"
        return f"the apikey of provider setting {self.setting.name!r} ({self.setting.setting_id})"


class Provider:
    """The OpenAI API; other vendors' adapters change what differs."""

    name = "openai"
    price_provider: str | None = "openai"  # the price library's provider id; None: by model
    # The key needs a setting for this provider (only openai has the gateway's own credential).
    needs_setting = True
    tracks_jobs = False  # batches, fine-tuning and background responses are followed
    # Client headers forwarded upstream besides the common ones (proxy/upstream.py).
    forwarded_headers: frozenset[str] = frozenset()
    wire_format = "openai"  # the API shape its bodies take: a route translates to it

    def paths(self) -> tuple[str, ...]:
        """The proxy's route patterns for this provider; `{tail}` is the route-relative path."""
        return (f"/api/providers/{self.name}/v1/{{tail:.*}}",)

    def endpoint(self, tail: str) -> tuple[str, str]:
        """(the endpoint as billed, such as "chat/completions"; the upstream path)."""
        endpoint = normalised_endpoint(tail)
        return endpoint, endpoint

    def billing(self, method: str, endpoint: str) -> Billing | None:
        return billing_of(method, endpoint)

    def target(self, setting: ProviderSetting, settings: Settings) -> Target:
        """The upstream of calls through `setting`; a setting without a usable one is refused."""
        return Target(self, setting, self.base_url(setting, settings), self.credential(setting))

    def base_url(self, setting: ProviderSetting, settings: Settings) -> str:
        return setting.options.get("baseUrl") or settings.openai_base_url

    def credential(self, setting: ProviderSetting) -> dict[str, str]:
        return {"Authorization": f"Bearer {setting.secret}"} if setting.secret else {}

    def step_path(
        self, target: Target, tail: str, model: str, params: Mapping[str, str]
    ) -> tuple[str, str]:
        """(the route-relative path, the query) a route's step on `model` calls `tail` with."""
        return tail, ""

    def upstream_query(self, target: Target, upstream_path: str, query: str) -> str:
        """The query string sent upstream, from the client's as it encoded it."""
        return query

    def default_model(self, endpoint: str, upstream_path: str) -> str:
        """The model a call is billed at when neither its body nor the answer names one."""
        return ""

    def asks_stream_usage(self, call: Call) -> bool:
        """Whether to have upstream report a stream's usage (hidden again from the client)."""
        return call.endpoint in STREAM_USAGE_ENDPOINTS

    def usage_of_body(self, body: bytes) -> tuple[Usage | None, str]:
        return usage_of_body(body)

    def stream_meter(self, call: Call) -> Meter:
        return StreamMeter(call.drop_usage_chunk, tokens.tiktoken_counter(call.model))

    def prompt_tokens(
        self, call: Call, payload: dict[str, Any], count: tokens.TextCounter, image_tokens: int
    ) -> int:
        return call.openai_prompt_tokens(payload, count, image_tokens)

    def error_response(self, error: ProxyError, request_id: str) -> web.Response:
        return error.response(request_id)
