"""One proxied call, as it passes through the stages, and what its request asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy.endpoints import METERED, MULTIPART, Billing
from proxy.errors import invalid_json
from proxy.metering import Usage
from proxy.multipart import MalformedForm, read_form
from proxy.policies.outcome import Screening
from proxy.providers import Target
from shared import tokens
from shared.admissions import Admission
from shared.jsonutil import positive_int
from shared.models import Key, User

if TYPE_CHECKING:  # proxy.requestlog reads calls
    from proxy.requestlog import StreamRecord

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    "chat/completions",
    "completions",
    "embeddings",
    "responses",
)
# What upstream uses when the request names no model.
DEFAULT_MODELS = dict.fromkeys(
    ("images/generations", "images/edits", "images/variations"), "dall-e-2"
)


@dataclass(slots=True)
class RouteMark:
    """Where a call stands in its route, as its usage event records it."""

    route_id: str
    step: int
    attempt: int = 0  # 1 for the first attempt of the call, counted across its steps
    cache_hit: bool = False
    saved_cost_nano: int = 0  # a hit: what the answer cost when it was made

    def fields(self) -> dict[str, Any]:
        return {
            "route_id": self.route_id,
            "route_step": self.step,
            "route_attempt": self.attempt,
            "cache_hit": self.cache_hit,
            "saved_cost_nano": self.saved_cost_nano,
        }


@dataclass(slots=True)
class Call:
    request_id: str
    key: Key
    target: Target  # the provider and setting the call goes through
    endpoint: str  # what is billed, such as "chat/completions"
    body: bytes  # what goes upstream
    payload: dict[str, Any] | None = None  # a metered endpoint's JSON body or form fields
    model: str = ""
    stream: bool = False
    drop_usage_chunk: bool = False
    admission: Admission | None = None
    status: int = 0
    usage: Usage | None = None
    reported_model: str = ""
    streamed: bool = False  # the answer was an event stream
    upstream_started: float = 0.0  # perf_counter() readings around the upstream exchange
    upstream_ended: float = 0.0
    method: str = "POST"
    upload_bytes: int = 0  # the files of a multipart form
    upstream_path: str = ""  # route-relative, as upstream serves it; the endpoint when empty
    upstream_query: str = ""  # as the client encoded it, with what the adapter adds
    screening: Screening | None = None  # what the key's policy found and did, if it has one
    user_id: str = ""  # the end user its body names
    custom_id: str = ""  # X-CUSTOM-EVENT-ID
    metadata: bytes = b""  # X-METADATA, as a compact JSON object
    # What request logging keeps of the answer (proxy/requestlog.py): a JSON body, or a stream.
    response_body: bytes | None = None
    stream_record: StreamRecord | None = None
    user: User | None = None  # the user record it belongs to (proxy/users.py)
    route: RouteMark | None = None  # set on a route's calls: which step and attempt this is
    billing: Billing | None = field(init=False)

    def __post_init__(self) -> None:
        self.billing = self.target.provider.billing(self.method, self.endpoint)
        self.upstream_path = self.upstream_path or self.endpoint

    def inherit(self, front: Call) -> None:
        """What was decided of the client's request before a route's step took it over."""
        self.user, self.user_id, self.screening = front.user, front.user_id, front.screening
        self.custom_id, self.metadata = front.custom_id, front.metadata

    @property
    def upstream_seconds(self) -> float:
        if not self.upstream_started:
            return 0.0
        return max(0.0, (self.upstream_ended or self.upstream_started) - self.upstream_started)

    @property
    def metered(self) -> bool:
        return self.payload is not None

    def max_output_tokens(self) -> int:
        payload = self.payload or {}
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            if value := positive_int(payload.get(name)):
                return value
        return 0

    def output_tokens_bound(self) -> int:
        """The output cap times the completions generated (`n`, or `best_of` where more)."""
        cap = self.max_output_tokens()
        payload = self.payload
        if not cap or payload is None or ("n" not in payload and "best_of" not in payload):
            return cap
        choices = max(positive_int(payload.get("n")), 1)
        if self.endpoint == COMPLETIONS:
            choices = max(choices, positive_int(payload.get("best_of")))
        return cap * choices

    def prompt_tokens_bound(self) -> int:
        """Never fewer than the prompt's tokens, and cheap: no encoding is loaded. To reserve."""
        return self._prompt_tokens(tokens.utf8_bytes, tokens.image_tokens_most(self.model))

    def prompt_tokens_estimate(self) -> int:
        """The prompt's tokens as tiktoken counts them: to bill when upstream reports none."""
        return self._prompt_tokens(tokens.tiktoken_counter(self.model), tokens.IMAGE_TOKENS)

    def _prompt_tokens(self, count: tokens.TextCounter, image_tokens: int) -> int:
        payload = self.payload
        if payload is None or self.billing is not Billing.TOKENS:
            return 0
        return self.target.provider.prompt_tokens(self, payload, count, image_tokens)

    def openai_prompt_tokens(
        self, payload: dict[str, Any], count: tokens.TextCounter, image_tokens: int
    ) -> int:
        if self.endpoint == CHAT:
            return tokens.count_chat_prompt(payload, count, image_tokens)
        field = {COMPLETIONS: "prompt", EMBEDDINGS: "input", RESPONSES: "input"}[self.endpoint]
        total = tokens.count_input(payload.get(field), count, image_tokens)
        if self.endpoint == RESPONSES and isinstance(payload.get("instructions"), str):
            total += count(payload["instructions"])
        return total


def new_call(request: web.Request, target: Target, key: Key, body: bytes, request_id: str) -> Call:
    provider = target.provider
    endpoint, upstream_path = provider.endpoint(request.match_info["tail"])
    query = provider.upstream_query(target, upstream_path, request.rel_url.raw_query_string)
    call = Call(
        request_id,
        key,
        target,
        endpoint,
        body,
        method=request.method,
        upstream_path=upstream_path,
        upstream_query=query,
    )
    if call.billing not in METERED:
        return call  # unread: nothing in it changes what the call costs
    if call.endpoint in MULTIPART and request.content_type == "multipart/form-data":
        payload = form_fields(call, request.headers.get("Content-Type", ""))
    else:
        payload = json_object(body)  # whatever type is declared: upstreams may read it as JSON
    read_payload(call, payload)
    return call


def read_payload(call: Call, payload: dict[str, Any]) -> None:
    """What a metered call's body asks for: its model, and whether it streams."""
    provider = call.target.provider
    call.payload = payload
    model = payload.get("model")
    call.model = (
        model
        if isinstance(model, str)
        else provider.default_model(call.endpoint, call.upstream_path)
        or DEFAULT_MODELS.get(call.endpoint, "")
    )
    call.stream = payload.get("stream") is True or payload.get("stream") == "true"
    if call.stream and provider.asks_stream_usage(call):
        ask_for_stream_usage(call, payload)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid_json(f"the request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise invalid_json("the request body must be a JSON object")
    return payload


def form_fields(call: Call, content_type: str) -> dict[str, Any]:
    try:
        form = read_form(call.body, content_type)
    except MalformedForm as error:
        raise invalid_json(f"the multipart form cannot be read: {error}") from None
    call.upload_bytes = form.file_bytes
    return form.fields


def ask_for_stream_usage(call: Call, payload: dict[str, Any]) -> None:
    """Have upstream report the usage of a stream; hide it from a client that did not ask."""
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return
    rewritten = dict(payload)
    rewritten["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    try:
        call.body = orjson.dumps(rewritten)
    except orjson.JSONEncodeError:  # nested deeper than any API request is
        raise invalid_json("the request body is nested too deeply") from None
    call.drop_usage_chunk = True
