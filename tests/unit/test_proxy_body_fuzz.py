"""The proxy's request-body parsing on arbitrary bodies: a Call or a 400, never a crash.

`new_call` runs on every proxied request before anything is forwarded, and the token estimate
runs for every cost-limited key: an exception there other than a ProxyError would be a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.calls import CHAT, COMPLETIONS, Call, new_call
from proxy.endpoints import METERED, POST_BILLING
from proxy.errors import ProxyError
from shared.models import Key
from tests.unit.targets import OPENAI_TARGET

KEY = Key(key_id="k", name="fuzz", key_hash="h", created_at=0, updated_at=0)
METERED_ENDPOINTS = sorted(path for path, billing in POST_BILLING.items() if billing in METERED)
UNMETERED_ENDPOINTS = ["models", "moderations", "files", "batches", "threads/runs"]
ENDPOINTS = [*METERED_ENDPOINTS, *UNMETERED_ENDPOINTS]
# Fields the parser and the token estimate look at, so that random bodies reach them.
FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "tools",
    "prompt",
    "input",
    "instructions",
    "content",
    "role",
    "name",
    "tool_calls",
    "function",
    "type",
    "text",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["gpt-4o-mini", "priced-model", "user", "image_url", "input_image", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=8
)
# A message list the estimate walks item by item, with odd values where it expects others.
messages = st.lists(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5), max_size=4)
chat_objects = st.fixed_dictionaries(
    {"model": st.text(max_size=12), "messages": messages}, optional={"stream": st.booleans()}
)
# Well-formed chats with varied extras, for what the parser must keep or change exactly.
plain_chats = st.fixed_dictionaries(
    {
        "model": st.text(max_size=12),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "user"]), "content": st.text(max_size=30)}
            ),
            max_size=3,
        ),
    },
    optional={
        "temperature": st.floats(0, 2),
        "user": st.text(max_size=8),
        "metadata": st.dictionaries(st.text(max_size=6), json_scalars, max_size=3),
    },
)
fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def request_for(endpoint: str, content_type: str = "application/json") -> web.Request:
    return make_mocked_request(
        "POST",
        f"/api/providers/openai/v1/{endpoint}",
        headers=CIMultiDict({"Content-Type": content_type}),
        match_info={"tail": endpoint},
    )


def parse(endpoint: str, body: bytes, content_type: str = "application/json") -> Call | None:
    """The Call, or None when refused the documented way (a ProxyError 400)."""
    try:
        return new_call(request_for(endpoint, content_type), OPENAI_TARGET, KEY, body, "req-id")
    except ProxyError as error:
        assert (error.status, error.code) == (400, "invalid_json")
        return None


def assert_estimates(call: Call) -> None:
    assert call.prompt_tokens_bound() >= call.prompt_tokens_estimate() >= 0
    assert call.max_output_tokens() >= 0


@fuzz
@given(endpoint=st.sampled_from(ENDPOINTS), body=st.binary(max_size=300))
@example(endpoint=CHAT, body=b"\xff\xfe")
@example(endpoint=CHAT, body=b'{"model": "\\ud800"}')
@example(endpoint=CHAT, body=b"[" * 1025 + b"]" * 1025)
def test_random_bytes_are_a_call_or_a_400(endpoint: str, body: bytes) -> None:
    parse(endpoint, body)


def is_json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


@fuzz
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.binary(max_size=100) | st.builds(orjson.dumps, json_objects),
    content_type=st.sampled_from(
        [
            "text/plain",
            "application/octet-stream",
            "application/vnd.a+json",
            "application/json; charset=utf-8",
            "",
        ]
    ),
)
@example(endpoint=CHAT, body=b'{"model": "gpt-4o"}', content_type="application/vnd.a+json")
@example(endpoint=CHAT, body=b"model=gpt-4o", content_type="text/plain")
def test_a_metered_endpoint_reads_json_whatever_the_declared_type(
    endpoint: str, body: bytes, content_type: str
) -> None:
    call = parse(endpoint, body, content_type)
    if endpoint in UNMETERED_ENDPOINTS:  # forwarded unread
        assert call is not None and call.body == body and not call.metered
    elif is_json_object(body):
        assert call is not None and call.metered
    else:
        assert call is None  # a 400, never a free pass


@fuzz
@given(endpoint=st.sampled_from(ENDPOINTS), value=json_values)
def test_random_json_values_are_a_call_or_a_400(endpoint: str, value: Any) -> None:
    call = parse(endpoint, orjson.dumps(value))
    if call is not None:
        assert_estimates(call)


@fuzz
@given(endpoint=st.sampled_from(METERED_ENDPOINTS), payload=json_objects | chat_objects)
@example(endpoint=CHAT, payload={"model": "m", "messages": [{"role": "user", "tool_calls": 1}]})
@example(endpoint="embeddings", payload={"model": "m", "input": [[["a"]]]})
def test_any_json_object_has_a_token_estimate(endpoint: str, payload: dict[str, Any]) -> None:
    call = parse(endpoint, orjson.dumps(payload))
    assert call is not None and call.payload == payload
    assert_estimates(call)


# Where a deep value is walked: the stream rewrite re-serializes the whole body, the estimate
# serializes chat tools and recurses into prompt and input lists.
DEEP_FIELDS = [
    (CHAT, "metadata", True),
    (COMPLETIONS, "metadata", True),
    (CHAT, "tools", False),
    (COMPLETIONS, "prompt", False),
    ("embeddings", "input", False),
    ("responses", "input", False),
]


@pytest.mark.parametrize(("endpoint", "field", "stream"), DEEP_FIELDS)
@pytest.mark.parametrize("depth", [100, 254, 300, 1000])
def test_deeply_nested_bodies_are_a_call_or_a_400(
    endpoint: str, field: str, stream: bool, depth: int
) -> None:
    # orjson reads JSON up to 1024 levels deep but writes at most 254; written by hand here.
    nested = "[" * depth + '"a"' + "]" * depth
    body = f'{{"model": "m", "stream": {str(stream).lower()}, "{field}": {nested}}}'.encode()
    call = parse(endpoint, body)
    if call is not None:
        assert_estimates(call)


stream_options_without_usage = st.none() | st.fixed_dictionaries(
    {}, optional={"include_usage": st.none() | st.just(False), "other": json_scalars}
)


@fuzz
@given(
    endpoint=st.sampled_from([CHAT, COMPLETIONS]),
    payload=plain_chats,
    options=stream_options_without_usage,
)
def test_a_stream_that_did_not_ask_for_usage_asks_upstream_and_hides_it(
    endpoint: str, payload: dict[str, Any], options: dict[str, Any] | None
) -> None:
    payload = {**payload, "stream": True}
    if options is not None:
        payload["stream_options"] = options
    call = parse(endpoint, orjson.dumps(payload))
    assert call is not None and call.stream and call.drop_usage_chunk
    sent = orjson.loads(call.body)
    expected_options = {**(options or {}), "include_usage": True}
    assert sent == {**payload, "stream_options": expected_options}


@fuzz
@given(
    endpoint=st.sampled_from([CHAT, COMPLETIONS]),
    payload=plain_chats,
    extra=st.dictionaries(st.text(max_size=6), json_scalars, max_size=2),
    spacing=st.sampled_from([None, 2]),
)
def test_a_stream_that_asked_for_usage_is_forwarded_byte_for_byte(
    endpoint: str, payload: dict[str, Any], extra: dict[str, Any], spacing: int | None
) -> None:
    payload = {**payload, "stream": True, "stream_options": {**extra, "include_usage": True}}
    option = orjson.OPT_INDENT_2 if spacing else 0
    body = orjson.dumps(payload, option=option)
    call = parse(endpoint, body)
    assert call is not None and call.stream
    assert call.body == body
    assert not call.drop_usage_chunk


@fuzz
@given(endpoint=st.sampled_from(ENDPOINTS), payload=plain_chats)
def test_an_unstreamed_body_is_forwarded_byte_for_byte(
    endpoint: str, payload: dict[str, Any]
) -> None:
    payload = {**payload, "stream": False}
    body = orjson.dumps(payload)
    call = parse(endpoint, body)
    assert call is not None and not call.stream and not call.drop_usage_chunk
    assert call.body == body
