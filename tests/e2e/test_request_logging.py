"""shouldLogRequest / shouldLogResponse: the bodies stored with the call's event, capped."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.test_event_annotations import events_of
from tests.e2e.test_policies import every_log_field, wait_for_policy


async def logged(gateway: Gateway, custom_id: str) -> dict[str, Any]:
    [event] = await events_of(gateway, 1, customIds=[custom_id])
    return event


async def test_bodies_are_stored_for_keys_that_log_them_only(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    raw, _ = await gateway.create_key(shouldLogRequest=True, shouldLogResponse=True)
    quiet, _ = await gateway.create_key()
    marker = uuid.uuid4().hex
    messages = [{"role": "user", "content": f"say hi {marker}"}]
    client = gateway.client(raw)
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-CUSTOM-EVENT-ID": "plain"}
    )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True,
        extra_headers={"X-CUSTOM-EVENT-ID": "streamed"},
    )  # fmt: skip
    streamed_text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await gateway.client(quiet).chat.completions.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-CUSTOM-EVENT-ID": "quiet"}
    )

    plain = await logged(gateway, "plain")
    assert orjson.loads(plain["requestContent"])["messages"] == messages
    answer = orjson.loads(plain["responseContent"])
    assert answer["choices"][0]["message"]["content"]
    assert plain["requestTruncated"] is plain["responseTruncated"] is False

    streamed = await logged(gateway, "streamed")
    assert marker in streamed["requestContent"]
    assembled = orjson.loads(streamed["responseContent"])
    assert assembled["content"] == streamed_text
    assert assembled["usage"]["completion_tokens"] > 0

    others = await logged(gateway, "quiet")
    assert not {"requestContent", "responseContent"} & set(others)
    # Stored, never logged: no line of the proxy's or keymgmt's carries a body.
    lines = every_log_field(caplog)
    assert marker not in lines and streamed_text not in lines


async def test_a_body_over_one_megabyte_is_stored_truncated(gateway: Gateway) -> None:
    raw, _ = await gateway.create_key(shouldLogRequest=True)
    big = "ab" * (600 * 1024)  # 1.2 MB of text
    await gateway.client(raw).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": big}],
        extra_headers={"X-CUSTOM-EVENT-ID": "big"},
    )
    event = await logged(gateway, "big")
    assert event["requestTruncated"] is True
    assert len(event["requestContent"].encode()) == 1024 * 1024
    assert "responseContent" not in event or event["responseContent"] is None


async def test_a_logged_answer_holds_the_placeholders_a_policy_put_back(gateway: Gateway) -> None:
    gateway.upstream.options.echo = True  # the answer repeats the prompt, values and all
    email = "jane.roe@example.com"
    response = await gateway.keymgmt.post(
        "/api/policies",
        json={"name": "pii", "config": {"rules": {"email": "allow_but_redact"}}, "restore": True},
    )
    policy_id = (await response.json())["id"]
    raw, _ = await gateway.create_key(
        policyId=policy_id, shouldLogRequest=True, shouldLogResponse=True
    )
    await wait_for_policy(gateway, policy_id)
    client = gateway.client(raw)
    for custom_id, stream in (("json", False), ("sse", True)):
        answer = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Write to {email} now"}],
            stream=stream,
            extra_headers={"X-CUSTOM-EVENT-ID": custom_id},
        )
        if stream:
            assert email in "".join([c.choices[0].delta.content or "" async for c in answer])  # type: ignore[union-attr]
        else:
            assert email in answer.choices[0].message.content  # type: ignore[union-attr,operator]
        event = await logged(gateway, custom_id)
        for stored in (event["requestContent"], event["responseContent"]):
            assert email not in stored and "[EMAIL_1]" in stored


async def test_a_logged_request_the_policy_blocks_or_warns_about_holds_no_value(
    gateway: Gateway,
) -> None:
    ssn, email = "536-22-1234", "jane.roe@example.com"
    response = await gateway.keymgmt.post(
        "/api/policies",
        json={"name": "pii", "config": {"rules": {"ssn": "block", "email": "allow_but_warn"}}},
    )
    policy_id = (await response.json())["id"]
    raw, _ = await gateway.create_key(policyId=policy_id, shouldLogRequest=True)
    await wait_for_policy(gateway, policy_id)
    client = gateway.client(raw)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"ssn {ssn}, mail {email}"}],
            extra_headers={"X-CUSTOM-EVENT-ID": "blocked"},
        )
    await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"mail {email}"}],
        extra_headers={"X-CUSTOM-EVENT-ID": "warned"},
    )
    (sent,) = [seen.body for seen in gateway.upstream.recorded]
    assert email.encode() in sent  # a warning forwards the body as it came
    for custom_id in ("blocked", "warned"):
        stored = (await logged(gateway, custom_id))["requestContent"]
        assert ssn not in stored and email not in stored, custom_id
        assert "[EMAIL_1]" in stored, custom_id
