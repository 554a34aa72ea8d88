"""Policies end to end: the real openai SDK through the proxy, the fake upstream recording."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as redis

from proxy.typedefs import POLICIES
from tests.e2e.conftest import Gateway

EMAIL, PHONE, SSN = "jane.roe@example.com", "555-234-5678", "536-22-1234"
SECRET = "ghp_" + "aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2"
VALUES = (EMAIL, PHONE, SSN, SECRET)
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find a customer",
            "parameters": {"type": "object", "properties": {"email": {"type": "string"}}},
        },
    }
]


async def policy(gateway: Gateway, rules: dict[str, str], **fields: Any) -> str:
    body = {"name": "pii", "config": {"rules": rules}, **fields}
    response = await gateway.keymgmt.post("/api/policies", json=body)
    assert response.status == 200, await response.text()
    return str((await response.json())["id"])


async def key_with(gateway: Gateway, rules: dict[str, str], **fields: Any) -> tuple[str, str]:
    policy_id = await policy(gateway, rules, **fields)
    raw, key = await gateway.create_key(policyId=policy_id)
    await wait_for_policy(gateway, policy_id)
    return raw, key["keyId"]


async def wait_for_policy(gateway: Gateway, policy_id: str) -> None:
    async with asyncio.timeout(5):
        while True:
            if all(proxy.app[POLICIES].get(policy_id) for proxy in gateway.proxies):
                return
            await asyncio.sleep(0.005)


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def upstream_bodies(gateway: Gateway) -> list[bytes]:
    return [seen.body for seen in gateway.upstream.recorded]


async def events_of(gateway: Gateway, key_id: str, count: int = 1) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        while True:
            response = await gateway.keymgmt.get(f"/api/reporting/keys/{key_id}/events")
            events = (await response.json())["events"]
            if len(events) >= count:
                return events  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


async def test_block_refuses_naming_the_types_forwarding_and_billing_nothing(
    gateway: Gateway,
) -> None:
    raw, key_id = await key_with(gateway, {"ssn": "block", "email": "allow_but_redact"})
    client = gateway.client(raw)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=user(f"my ssn is {SSN}, mail {EMAIL}")
        )
    assert raised.value.status_code == 403
    assert raised.value.code == "policy_violation"
    assert "ssn" in raised.value.message and SSN not in raised.value.message
    assert gateway.upstream.recorded == []
    (event,) = await events_of(gateway, key_id)
    assert event["status"] == 403 and event["costInUsd"] == 0
    assert event["policyAction"] == "block"
    assert event["policyCounts"] == {"ssn": 1, "email": 1}
    for actions, found in ((["block"], 1), (["allow_but_warn"], 0)):
        response = await gateway.keymgmt.post(
            "/api/v2/events", json={"keyIds": [key_id], "actions": actions, "returnCount": True}
        )
        assert (await response.json())["count"] == found


async def test_redact_sends_placeholders_and_keeps_images_and_tools(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway, {"all": "allow_but_redact"})
    completion = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": f"Escalate to {EMAIL}."},
            *user([{"type": "text", "text": f"I am {EMAIL}, call {PHONE}"}, IMAGE]),
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    (sent,) = upstream_bodies(gateway)
    assert not any(value.encode() in sent for value in VALUES)
    body = orjson.loads(sent)
    assert body["messages"][0]["content"] == "Escalate to [EMAIL_1]."
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "I am [EMAIL_1], call [PHONE_1]"}, IMAGE,
    ]  # fmt: skip
    assert body["tools"] == TOOLS
    (event,) = await events_of(gateway, key_id)
    assert event["policyAction"] == "allow_but_redact"
    assert event["policyCounts"] == {"email": 2, "phone": 1}


async def test_restore_puts_the_values_back_in_json_answers(gateway: Gateway) -> None:
    gateway.upstream.options.echo = True
    raw, _ = await key_with(gateway, {"all": "allow_but_redact"}, restore=True)
    completion = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini", messages=user(f"Mail {EMAIL} or call {PHONE}; token {SECRET}.")
    )
    # Secrets stay redacted for good: the answer gets the placeholder.
    assert (
        completion.choices[0].message.content == f"Mail {EMAIL} or call {PHONE}; token [API_KEY_1]."
    )
    assert not any(value.encode() in body for body in upstream_bodies(gateway) for value in VALUES)


async def test_restore_puts_the_values_back_in_streams(gateway: Gateway) -> None:
    gateway.upstream.options.echo = True  # three characters an event: placeholders split
    raw, _ = await key_with(gateway, {"all": "allow_but_redact"}, restore=True)
    stream = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini",
        messages=user(f"Mail {EMAIL} or call {PHONE} or {EMAIL}"),
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Mail {EMAIL} or call {PHONE} or {EMAIL}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    sent = orjson.loads(upstream_bodies(gateway)[0])
    assert sent["messages"][0]["content"] == "Mail [EMAIL_1] or call [PHONE_1] or [EMAIL_1]"


async def test_without_restore_the_answer_keeps_the_placeholders(gateway: Gateway) -> None:
    gateway.upstream.options.echo = True
    raw, _ = await key_with(gateway, {"email": "allow_but_redact"})
    completion = await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini", messages=user(f"Mail {EMAIL}")
    )
    assert completion.choices[0].message.content == "Mail [EMAIL_1]"


async def test_warn_forwards_unchanged_and_says_so(gateway: Gateway) -> None:
    raw, key_id = await key_with(gateway, {"email": "allow_but_warn", "phone": "allow_but_warn"})
    response = await gateway.client(raw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(f"{EMAIL} and {EMAIL}, {PHONE}")
    )
    assert response.headers["x-policy-warnings"] == "email=2, phone=1"
    (sent,) = upstream_bodies(gateway)
    assert orjson.loads(sent)["messages"][0]["content"] == f"{EMAIL} and {EMAIL}, {PHONE}"
    (event,) = await events_of(gateway, key_id)
    assert event["policyAction"] == "allow_but_warn"


async def test_a_key_without_a_policy_is_not_screened(gateway: Gateway) -> None:
    raw, key = await gateway.create_key()
    response = await gateway.client(raw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(f"{EMAIL}")
    )
    assert "x-policy-warnings" not in response.headers
    assert EMAIL.encode() in upstream_bodies(gateway)[0]
    (event,) = await events_of(gateway, key["keyId"])
    assert event["policyAction"] is None and event["policyCounts"] is None


async def test_a_policy_change_takes_effect_at_once(gateway: Gateway) -> None:
    policy_id = await policy(gateway, {"email": "allow_but_warn"})
    raw, _ = await gateway.create_key(policyId=policy_id)
    await wait_for_policy(gateway, policy_id)
    client = gateway.client(raw)
    await client.chat.completions.create(model="gpt-4o-mini", messages=user(EMAIL))
    patched = await gateway.keymgmt.patch(
        f"/api/policies/{policy_id}", json={"config": {"rules": {"email": "block"}}}
    )
    assert patched.status == 200
    async with asyncio.timeout(5):
        while True:
            try:
                await client.chat.completions.create(model="gpt-4o-mini", messages=user(EMAIL))
            except openai.PermissionDeniedError:
                break
            await asyncio.sleep(0.02)


async def test_a_body_it_cannot_scan_is_refused(gateway: Gateway) -> None:
    raw, _ = await key_with(gateway, {"email": "block"})
    client = gateway.client(raw)
    with pytest.raises(openai.BadRequestError) as raised:
        await client.files.create(
            file=("data.jsonl", f'{{"email": "{EMAIL}"}}'.encode()), purpose="batch"
        )
    assert raised.value.code == "unscannable_body"
    assert gateway.upstream.recorded == []


async def test_no_value_in_any_log_line_event_row_or_redis_key(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, redis_client: redis.Redis
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.upstream.options.echo = True
    raw, key_id = await key_with(gateway, {"ssn": "block", "all": "allow_but_redact"}, restore=True)
    client = gateway.client(raw)
    await client.chat.completions.create(model="gpt-4o-mini", messages=user(f"{EMAIL} {PHONE}"))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=user(f"{SECRET} {EMAIL}"), stream=True
    )
    _ = [chunk async for chunk in stream]
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=user(SSN))
    events = await events_of(gateway, key_id, 3)
    stored = orjson.dumps(events)
    everything_in_redis = await redis_dump(redis_client)
    lines = every_log_field(caplog)
    for value in VALUES:
        assert value not in lines
        assert value.encode() not in stored
        assert value.encode() not in everything_in_redis


def every_log_field(caplog: pytest.LogCaptureFixture) -> str:
    """Each record's message and every field it carries (a call line's are extras, which
    caplog.text leaves out)."""
    return "\n".join(repr(vars(record)) for record in caplog.records)


async def redis_dump(client: redis.Redis) -> bytes:
    """Every key of the test's Redis database, and what it holds."""
    pieces = []
    async for name in client.scan_iter(count=1000):
        pieces.append(name)
        kind = (await client.type(name)).decode()
        if kind == "string":
            pieces.append(await client.get(name) or b"")
        elif kind == "hash":
            pieces.append(
                orjson.dumps(
                    {k.decode(): v.decode() for k, v in (await client.hgetall(name)).items()}
                )
            )
        elif kind == "stream":
            for _, fields in await client.xrange(name):
                pieces.extend(fields.values())
        elif kind == "zset":
            pieces.extend(await client.zrange(name, 0, -1))
        elif kind == "list":
            pieces.extend(await client.lrange(name, 0, -1))
        elif kind == "set":
            pieces.extend(await client.smembers(name))
    return b"\n".join(pieces)
