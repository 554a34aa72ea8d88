"""What a client can send that must not reach, or come back from, the upstream as it was."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from proxy.fakeupstream import FAKE_UPSTREAM, create_fake_upstream
from tests.e2e.conftest import PROXY_PATH, Gateway, Start

CHAT_BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
UPSTREAM_KEY = "sk-upstream-secret"


async def raw_request(
    gateway: Gateway, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request over a plain socket, with the request target exactly as given."""
    server = gateway.proxies[0]
    reader, writer = await asyncio.open_connection(server.host, server.port)
    lines = [f"{method} {target} HTTP/1.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if "Host" not in headers:
        lines.append(f"Host: {server.host}:{server.port}")
    if "Connection" not in headers:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), answer_headers, payload


def auth(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    "target",
    [
        f"http://aaaaaaaaaaaaaaaaa.evil.com{PROXY_PATH}/chat/completions",
        f"http://aaaaaaaaaaaaaaaaaaaaaaaaaa@evil.com{PROXY_PATH}/chat/completions",
        f"http://user:secret@aaaaaaaaaaaaaaaaa.evil.com:81{PROXY_PATH}/chat/completions",
    ],
)
async def test_an_absolute_form_target_reaches_only_the_configured_upstream(
    gateway: Gateway, target: str
) -> None:
    raw, _ = await gateway.create_key()
    status, _, body = await raw_request(gateway, "POST", target, auth(raw), CHAT_BODY)
    assert status == 200, body
    seen = gateway.upstream.recorded[-1]
    assert seen.path == "/v1/chat/completions"
    upstream_origin = gateway.settings.openai_base_url.removesuffix("/v1").removeprefix("http://")
    assert seen.headers["host"] == upstream_origin
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


@pytest.mark.parametrize("joint", ["", "@127.0.0.1:"])
async def test_the_target_authority_cannot_redirect_the_upstream_credential(
    start_gateway: Start, aiohttp_server: Any, joint: str
) -> None:
    """Today's URL is the base plus the target minus the prefix's length of characters."""
    evil = create_fake_upstream()
    evil_port = str((await aiohttp_server(evil)).port)
    # A base URL without a path, as in OPENAI_BASE_URL=http://llm-gw; nothing listens on it.
    base = f"http://127.0.0.1:{evil_port[0]}"
    gateway = await start_gateway(openai_base_url=base)
    raw, _ = await gateway.create_key()
    # "http://aaa...aaa" is as long as the prefix: what follows lands right after the base URL.
    authority = "a" * (len(PROXY_PATH) - len("http://")) + joint + evil_port[1:]
    target = f"http://{authority}{PROXY_PATH}/chat/completions"
    status, _, body = await raw_request(gateway, "POST", target, auth(raw), CHAT_BODY)
    assert evil[FAKE_UPSTREAM].recorded == []
    assert status == 502, body
    assert orjson.loads(body)["error"]["code"] == "upstream_unreachable"


@pytest.mark.parametrize(
    "tail",
    [
        "x/../chat/completions",
        "x/%2e%2e/chat/completions",
        "x/%2E./chat/completions",
        "./chat/completions",
        "chat/completions/..",
        "x/%252e%252e/chat/completions",
        "../../v1/chat/completions",
    ],
)
async def test_a_dot_segment_is_refused(gateway: Gateway, tail: str) -> None:
    raw, _ = await gateway.create_key()
    status, _, body = await raw_request(
        gateway, "POST", f"{PROXY_PATH}/{tail}", auth(raw), CHAT_BODY
    )
    assert status == 400, body
    assert orjson.loads(body)["error"]["code"] == "invalid_path"
    assert gateway.upstream.recorded == []


@pytest.mark.parametrize(
    "tail", ["chat//completions", "/chat/completions", "chat/completions/", "chat%2Fcompletions"]
)
async def test_the_normalised_path_is_forwarded_and_metered(gateway: Gateway, tail: str) -> None:
    raw, _ = await gateway.create_key()
    stream = orjson.dumps({**orjson.loads(CHAT_BODY), "stream": True})
    status, _, body = await raw_request(gateway, "POST", f"{PROXY_PATH}/{tail}", auth(raw), stream)
    assert status == 200, body
    seen = gateway.upstream.recorded[-1]
    assert seen.path == "/v1/chat/completions"
    # Metered as a chat stream: the proxy asked upstream for the stream's usage.
    assert b'"include_usage":true' in seen.body


async def test_the_query_string_goes_upstream(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    target = f"{PROXY_PATH}/models?limit=2&after=a%20b"
    status, _, body = await raw_request(gateway, "GET", target, auth(raw))
    assert status == 200, body
    seen = gateway.upstream.recorded[-1]
    assert (seen.path, seen.query) == ("/v1/models", "limit=2&after=a b")


async def test_client_headers_that_never_reach_upstream(start_gateway: Start) -> None:
    gateway = await start_gateway(openai_organization="org-gateway", openai_project="proj_gw")
    raw, _ = await gateway.create_key()
    sent = {
        **auth(raw),
        "Cookie": "session=client",
        "X-Forwarded-For": "203.0.113.9",
        "Forwarded": "for=203.0.113.9",
        "Host": "evil.example",
        "OpenAI-Organization": "org-client",
        "OpenAI-Project": "proj_client",
        "Proxy-Authorization": "Basic Y2xpZW50OnNlY3JldA==",
        "X-Stainless-Lang": "python",
        "X-Stainless-Hop": "only for the next hop",
        "Connection": "close, X-Stainless-Hop, Authorization, OpenAI-Organization",
    }
    status, _, body = await raw_request(
        gateway, "POST", f"{PROXY_PATH}/chat/completions", sent, CHAT_BODY
    )
    assert status == 200, body
    seen = gateway.upstream.recorded[-1].headers
    for name in ("cookie", "x-forwarded-for", "forwarded", "proxy-authorization"):
        assert name not in seen
    assert "evil.example" not in seen["host"]
    assert seen["x-stainless-lang"] == "python"  # an allowed header passes...
    assert "x-stainless-hop" not in seen  # ...unless the client's Connection names it
    # What the gateway sets itself is never dropped or replaced by the client.
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen["openai-organization"] == "org-gateway"
    assert seen["openai-project"] == "proj_gw"


async def test_answers_carry_no_upstream_organisation_identity(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key()
    limited, _ = await gateway.create_key(rateLimitOverTime=5, rateLimitUnit="h")
    answer = await gateway.client(raw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    upstream_said = gateway.upstream.recorded[-1]
    assert upstream_said.path == "/v1/chat/completions"
    names = {name.lower() for name in answer.headers}
    assert {"openai-organization", "openai-project"}.isdisjoint(names)
    assert not any(name.startswith("x-ratelimit-") for name in names)
    assert answer.headers["openai-version"]  # the rest of upstream's headers pass

    answer = await gateway.client(limited).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    ratelimit = {k.lower(): v for k, v in answer.headers.items() if k.startswith("x-ratelimit-")}
    assert ratelimit == {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4"}


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_refusing_the_gateway_credential_is_a_502(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    raw, _ = await gateway.create_key()
    client = gateway.client(raw)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    caplog.set_level(logging.INFO)

    gateway.upstream.options.fail_status = status
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        error = raised.value
        assert error.status_code == 502
        assert (error.type, error.code) == ("upstream_error", "upstream_auth_failed")
        answer = error.response.text
        assert "sk-" not in answer and "cret" not in answer and "Incorrect" not in answer
    if status == 401:  # what the proxy kept from the client: upstream's answer names the key
        said = await gateway.keymgmt.session.post(
            f"{gateway.settings.openai_base_url}/chat/completions",
            headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        )
        assert "sk-up" in await said.text()

    operator_lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(operator_lines) == 1, "one line while the refusals go on"
    assert f"HTTP {status}" in operator_lines[0].getMessage()
    assert UPSTREAM_KEY not in caplog.text and UPSTREAM_KEY[-4:] not in caplog.text

    gateway.upstream.options.fail_status = None
    await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    gateway.upstream.options.fail_status = status
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


async def test_x_request_timeout_cannot_outlast_proxy_timeout(start_gateway: Start) -> None:
    gateway = await start_gateway(proxy_timeout=1.0)
    raw, _ = await gateway.create_key()
    gateway.upstream.options.latency = 3.0
    client = gateway.client(raw, default_headers={"x-request-timeout": "1h"}, timeout=20)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 504
    assert raised.value.code == "upstream_timeout"
    assert "after 1s" in raised.value.message  # PROXY_TIMEOUT, not the hour asked for
