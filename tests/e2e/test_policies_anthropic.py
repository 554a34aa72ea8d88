"""Policies on the anthropic path: the official anthropic SDK, Anthropic's body shapes."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.test_anthropic import SECRET as UPSTREAM_SECRET
from tests.e2e.test_anthropic import client_of, upstream_root
from tests.e2e.test_policies import EMAIL, PHONE, SSN, policy, upstream_bodies, wait_for_policy
from tests.e2e.test_providers import create_setting

MODEL = "claude-3-5-haiku-latest"


async def anthropic_key_with(gateway: Gateway, rules: dict[str, str], **fields: Any) -> str:
    policy_id = await policy(gateway, rules, **fields)
    setting = await create_setting(
        gateway, "anthropic", {"apikey": UPSTREAM_SECRET, "baseUrl": upstream_root(gateway)}
    )
    raw, _ = await gateway.create_key(policyId=policy_id, settingIds=[setting["id"]])
    await wait_for_policy(gateway, policy_id)
    return raw


async def test_block_is_a_permission_error_in_anthropics_shape(gateway: Gateway) -> None:
    raw = await anthropic_key_with(gateway, {"ssn": "block"})
    async with client_of(gateway, raw) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as raised:
            await client.messages.create(
                model=MODEL,
                max_tokens=16,
                system=f"The customer's ssn is {SSN}",
                messages=[{"role": "user", "content": "hello"}],
            )
    body: Any = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "ssn" in body["error"]["message"] and SSN not in body["error"]["message"]
    assert not [seen for seen in gateway.upstream.recorded if seen.path == "/v1/messages"]


async def test_redact_reaches_system_blocks_tool_use_and_tool_results(gateway: Gateway) -> None:
    raw = await anthropic_key_with(gateway, {"all": "allow_but_redact"})
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}  # fmt: skip
    messages: Any = [
        {"role": "user", "content": [{"type": "text", "text": f"Mail {EMAIL}"}, image]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"email": EMAIL}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"phone {PHONE}"}]},
    ]  # fmt: skip
    async with client_of(gateway, raw) as client:
        await client.messages.create(
            model=MODEL,
            max_tokens=16,
            system=[{"type": "text", "text": f"Escalate to {EMAIL}"}],
            messages=messages,
            tools=[{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
        )
    [sent_bytes] = [b for b in upstream_bodies(gateway) if b"messages" in b]
    assert EMAIL.encode() not in sent_bytes and PHONE.encode() not in sent_bytes
    sent = orjson.loads(sent_bytes)
    assert sent["system"][0]["text"] == "Escalate to [EMAIL_1]"
    assert sent["messages"][1]["content"][0]["input"] == {"email": "[EMAIL_1]"}
    assert sent["messages"][2]["content"][0]["content"] == "phone [PHONE_1]"
    assert sent["messages"][0]["content"][1] == image  # left as it was


async def test_restore_in_messages_and_their_streams(gateway: Gateway) -> None:
    gateway.upstream.options.echo = True  # a few characters an event: placeholders split
    raw = await anthropic_key_with(gateway, {"all": "allow_but_redact"}, restore=True)
    asked: Any = [{"role": "user", "content": f"Mail {EMAIL} or call {PHONE}"}]
    async with client_of(gateway, raw) as client:
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=asked)
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=asked) as stream:
            streamed = "".join([piece async for piece in stream.text_stream])
    assert message.content[0].text == streamed == f"Mail {EMAIL} or call {PHONE}"  # type: ignore[union-attr]
    assert all(EMAIL.encode() not in body for body in upstream_bodies(gateway))


async def test_warn_says_so_on_the_answer(gateway: Gateway) -> None:
    raw = await anthropic_key_with(gateway, {"email": "allow_but_warn"})
    async with client_of(gateway, raw) as client:
        answer = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"hi {EMAIL}"}]
        )
    assert answer.headers["x-policy-warnings"] == "email=1"
