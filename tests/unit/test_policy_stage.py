"""The policy stage on request bodies of every shape: OpenAI, Anthropic, embeddings, responses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.calls import Call
from proxy.errors import ProxyError
from proxy.policies.snapshot import PolicySnapshot
from proxy.policies.stage import screen
from shared.models import Key, Policy, RegexRule
from tests.unit.targets import OPENAI_TARGET

EMAIL, PHONE = "jane.roe@example.com", "555-234-5678"
CARD = "4111 1111 1111 1111"
SECRET = "sk-proj-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": f"mail {EMAIL}"}}]


def policies(**rules: str) -> PolicySnapshot:
    snapshot = PolicySnapshot()
    snapshot.replace(
        [
            Policy("p1", "redact", rules=rules or {"all": "allow_but_redact"}, restore=True),
            Policy("p2", "block", rules={"ssn": "block", "all": "allow_but_redact"}),
            Policy("p3", "warn", rules={"email": "allow_but_warn"}),
            Policy("p4", "custom", regex_rules=(RegexRule(r"EMP-\d{6}", "allow_but_redact"),)),
        ]
    )
    return snapshot


def call_with(body: Any, policy_id: str = "p1") -> Call:
    key = Key("k", "", "h", 0.0, 0.0, policy_id=policy_id)
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Call("r", key, OPENAI_TARGET, "chat/completions", raw)


def screened(body: Any, policy_id: str = "p1") -> tuple[Call, dict[str, Any]]:
    call = call_with(body, policy_id)
    screen(call, policies())
    return call, orjson.loads(call.body)


def test_openai_chat_text_parts_tool_calls_and_tool_messages() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": f"Support agent. Escalate to {EMAIL}."},
            {
                "role": "user",
                "content": [{"type": "text", "text": f"I am {EMAIL}, {PHONE}"}, IMAGE],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": f'{{"email": "{EMAIL}"}}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"card on file {CARD}"},
        ],
        "tools": TOOLS,
        "temperature": 0.2,
        "unknown_field": {"kept": [1, 2.5, None]},
    }
    call, sent = screened(body)
    messages = sent["messages"]
    assert messages[0]["content"] == "Support agent. Escalate to [EMAIL_1]."
    assert messages[1]["content"][0]["text"] == "I am [EMAIL_1], [PHONE_1]"
    assert messages[1]["content"][1] == IMAGE
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == '{"email": "[EMAIL_1]"}'
    assert messages[3]["content"] == "card on file [CREDIT_DEBIT_NUMBER_1]"
    # Tool definitions, and every other field, as they came.
    assert sent["tools"] == TOOLS and sent["unknown_field"] == body["unknown_field"]
    assert sent["temperature"] == 0.2 and sent["model"] == "gpt-4o"
    assert call.screening is not None
    assert call.screening.counts == {"email": 3, "phone": 1, "credit_debit_number": 1}
    assert call.screening.action == "allow_but_redact"
    assert call.screening.restore == {
        "[EMAIL_1]": EMAIL, "[PHONE_1]": PHONE, "[CREDIT_DEBIT_NUMBER_1]": CARD,
    }  # fmt: skip


def test_anthropic_system_blocks_tool_use_tool_result_and_documents() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": f"Owner: {EMAIL}", "cache_control": {"type": "x"}}],
        "messages": [
            {"role": "user", "content": f"Call {PHONE}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"mail {EMAIL}", "signature": "sig"},
                    {"type": "tool_use", "id": "tu1", "name": "crm", "input": {"q": [EMAIL]}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu1", "content": f"key {SECRET}"},
                    {"type": "image", "source": {"type": "base64", "data": "iVBORw0KGgo="}},
                    {"type": "document", "source": {"type": "text", "data": f"to {EMAIL}"}},
                ],
            },
        ],
    }
    call, sent = screened(body)
    assert sent["system"][0] == {
        "type": "text", "text": "Owner: [EMAIL_1]", "cache_control": {"type": "x"},
    }  # fmt: skip
    assert sent["messages"][0]["content"] == "Call [PHONE_1]"
    thinking, tool_use = sent["messages"][1]["content"]
    assert thinking == body["messages"][1]["content"][0]  # signed: never altered
    assert tool_use["input"] == {"q": ["[EMAIL_1]"]}
    result, image, document = sent["messages"][2]["content"]
    assert result["content"] == "key [API_KEY_1]"
    assert image == body["messages"][2]["content"][1]
    assert document["source"]["data"] == "to [EMAIL_1]"
    assert call.screening is not None and "[API_KEY_1]" not in call.screening.restore


def test_anthropic_system_as_a_string() -> None:
    _, sent = screened({"system": f"reply to {EMAIL}", "messages": []})
    assert sent["system"] == "reply to [EMAIL_1]"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"input": f"embed {EMAIL}"}, ("input",)),
        ({"input": ["a", f"embed {EMAIL}"]}, ("input", 1)),
        ({"prompt": f"complete {EMAIL}"}, ("prompt",)),
        ({"prompt": [f"complete {EMAIL}"]}, ("prompt", 0)),
        ({"instructions": f"sign as {EMAIL}", "input": "hi"}, ("instructions",)),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": EMAIL}]}]},
            ("input", 0, "content", 0, "text"),
        ),
        ({"input": [{"type": "function_call_output", "output": EMAIL}]}, ("input", 0, "output")),
        ({"input": [{"type": "function_call", "arguments": EMAIL}]}, ("input", 0, "arguments")),
        ({"contents": [{"parts": [{"text": EMAIL}]}]}, ("contents", 0, "parts", 0, "text")),
    ],
)
def test_embeddings_completions_and_responses_inputs(body: Any, path: tuple[Any, ...]) -> None:
    _, sent = screened(body)
    value: Any = sent
    for step in path:
        value = value[step]
    assert EMAIL not in value and "[EMAIL_1]" in value


def test_token_arrays_are_left_alone() -> None:
    _, sent = screened({"input": [[1, 2, 3], [4]], "prompt": [5, 6]})
    assert sent == {"input": [[1, 2, 3], [4]], "prompt": [5, 6]}


def test_the_same_value_gets_the_same_placeholder_and_others_the_next_number() -> None:
    other = "john@example.org"
    _, sent = screened({"messages": [{"role": "user", "content": f"{EMAIL} {other} {EMAIL}"}]})
    assert sent["messages"][0]["content"] == "[EMAIL_1] [EMAIL_2] [EMAIL_1]"


def test_block_names_the_entity_types_and_records_counts() -> None:
    call = call_with({"messages": [{"role": "user", "content": f"ssn 123-45-6789 {EMAIL}"}]}, "p2")
    with pytest.raises(ProxyError) as raised:
        screen(call, policies())
    assert (raised.value.status, raised.value.code) == (403, "policy_violation")
    assert "ssn" in raised.value.message and "123-45" not in raised.value.message
    assert call.screening is not None
    assert call.screening.action == "block" and call.screening.counts == {"ssn": 1, "email": 1}


def test_warn_leaves_the_body_as_it_came() -> None:
    body = orjson.dumps({"messages": [{"role": "user", "content": f"{EMAIL}, {PHONE}"}]})
    call = call_with(body, "p3")
    screen(call, policies())
    assert call.body is body  # the phone is allowed by this policy: not even scanned for
    assert call.screening is not None and call.screening.warned == ("email",)
    assert call.screening.counts == {"email": 1}


def test_custom_patterns_redact_as_custom() -> None:
    call, sent = screened({"messages": [{"role": "user", "content": "EMP-123456 a@b.io"}]}, "p4")
    assert sent["messages"][0]["content"] == "[CUSTOM_1] a@b.io"
    assert call.screening is not None and call.screening.counts == {"custom": 1}


def test_nothing_found_forwards_the_body_untouched() -> None:
    body = orjson.dumps({"messages": [{"role": "user", "content": "hello there"}]})
    call = call_with(body)
    screen(call, policies())
    assert call.body is body
    assert call.screening is not None and call.screening.action == "allow"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"messages": [', b"\xff\xfe"])
def test_a_body_it_cannot_read_is_refused(body: bytes) -> None:
    with pytest.raises(ProxyError) as raised:
        screen(call_with(body), policies())
    assert (raised.value.status, raised.value.code) == (400, "unscannable_body")


def test_a_policy_the_proxy_does_not_hold_refuses_the_call() -> None:
    with pytest.raises(ProxyError) as raised:
        screen(call_with({"input": "x"}, "missing"), policies())
    assert (raised.value.status, raised.value.code) == (503, "policy_unavailable")


def test_a_scanner_failure_refuses_the_call(caplog: pytest.LogCaptureFixture) -> None:
    # As deep as JSON parsing allows: deeper than the walk's recursion goes.
    call = call_with(b'{"messages": [' + _deep(EMAIL, 510) + b"]}")
    with pytest.raises(ProxyError) as raised:
        screen(call, policies())
    assert (raised.value.status, raised.value.code) == (500, "policy_scan_failed")
    assert EMAIL not in caplog.text


def _deep(value: str, depth: int) -> bytes:
    return b'{"content": [' * depth + orjson.dumps(value) + b"]}" * depth


def test_a_key_without_a_policy_is_not_screened() -> None:
    body = orjson.dumps({"messages": [{"role": "user", "content": EMAIL}]})
    call = call_with(body, "")
    screen(call, PolicySnapshot())
    assert call.body is body and call.screening is None
