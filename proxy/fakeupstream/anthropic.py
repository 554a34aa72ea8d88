"""The Anthropic Messages API: messages (JSON or SSE), count_tokens and models.

Every call needs a key, in `x-api-key` or as `Authorization: Bearer` (the SDK's way since 2.0),
or it is a 401 authentication_error, and `anthropic-version` (400 without); a
request to /v1/models that carries `anthropic-version` is answered as Anthropic would, one
without it as OpenAI would. The counting rule is in the package docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.fakeupstream.accounting import anthropic_usage, echoed, reply_pieces
from proxy.fakeupstream.state import (
    CLAUDE_MODELS,
    ERROR_AFTER_PREAMBLE,
    FAKE_UPSTREAM,
    JSON,
    TOOL_ARGUMENT_FRAGMENTS,
    FakeAnthropicError,
    FakeAPIError,
    FakeUpstream,
)
from proxy.fakeupstream.wire import bearer_token, json_response, read_json, sse_event, stream_events

# Fault triggers: a last user message containing one of these fails as Anthropic may.
OVERLOADED_MID_STREAM = "[fake:overloaded-mid-stream]"  # an error event after some text
RATE_LIMITED = "[fake:429]"  # 429 rate_limit_error, with retry-after
OVERLOADED = "[fake:529]"  # 529 overloaded_error
MID_STREAM_DELTAS = 2  # text deltas sent before the error event
TOOL_TRIGGER = "call a tool"


def is_anthropic(request: web.Request) -> bool:
    return request.path.startswith("/v1/messages") or "anthropic-version" in request.headers


def check_headers(request: web.Request) -> None:
    if not (request.headers.get("x-api-key") or bearer_token(request)):
        raise FakeAnthropicError(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        raise FakeAnthropicError(400, "anthropic-version: header is required")


def _text(content: object) -> str:
    """The text of a content: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


def _last_text(body: JSON) -> str:
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    return _text(last.get("content")) if isinstance(last, dict) else ""


async def _request_body(request: web.Request) -> JSON:
    check_headers(request)
    try:
        body = await read_json(request)
    except FakeAPIError as error:  # said again in Anthropic's shape
        raise FakeAnthropicError(400, error.message) from None
    if not isinstance(body.get("model"), str):
        raise FakeAnthropicError(400, "model: Field required")
    if not isinstance(body.get("messages"), list):
        raise FakeAnthropicError(400, "messages: Field required")
    return body


@dataclass(frozen=True, slots=True)
class _Plan:
    """What both answer forms share, so that they cannot disagree."""

    id: str
    model: str
    pieces: tuple[str, ...]  # text pieces, or the tool input's JSON fragments
    stop_reason: str
    usage: JSON
    tool: str | None  # the tool's name when the answer is a tool_use block
    fails_mid_stream: bool
    fails_after_preamble: bool


def _plan(state: FakeUpstream, body: JSON) -> _Plan:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise FakeAnthropicError(400, "max_tokens: Field required (an integer of at least 1)")
    last = _last_text(body)
    if RATE_LIMITED in last:
        raise FakeAnthropicError(
            429, "Number of request tokens has exceeded your rate limit.", {"retry-after": "1"}
        )
    if OVERLOADED in last or (OVERLOADED_MID_STREAM in last and not body.get("stream")):
        raise FakeAnthropicError(529, "Overloaded")
    tools = body.get("tools")
    tool = None
    if isinstance(tools, list) and tools and TOOL_TRIGGER in last.lower():
        tool = str(tools[0].get("name", "")) if isinstance(tools[0], dict) else ""
    if tool is not None:
        pieces, stop_reason = TOOL_ARGUMENT_FRAGMENTS, "tool_use"
    elif state.options.echo:  # the last message back, a few characters a piece
        pieces, stop_reason = echoed(last), "end_turn"
    else:
        pieces, capped = reply_pieces(state.options, max_tokens)
        stop_reason = "max_tokens" if capped else "end_turn"
    return _Plan(
        id=state.new_id("msg_"),
        model=body["model"],
        pieces=pieces,
        stop_reason=stop_reason,
        usage=anthropic_usage(body, len(pieces)),
        tool=tool,
        fails_mid_stream=OVERLOADED_MID_STREAM in last,
        fails_after_preamble=ERROR_AFTER_PREAMBLE in (last + state.options.stream_fault),
    )


def _tool_block(plan: _Plan, tool_input: Any) -> JSON:
    tool_id = "toolu_" + plan.id.removeprefix("msg_")
    return {"type": "tool_use", "id": tool_id, "name": plan.tool, "input": tool_input}


def _message(plan: _Plan, content: list[JSON], stop_reason: str | None, usage: JSON) -> JSON:
    return {
        "id": plan.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _whole(plan: _Plan) -> JSON:
    text = "".join(plan.pieces)
    block = _tool_block(plan, {"query": "fake"}) if plan.tool else {"type": "text", "text": text}
    return _message(plan, [block], plan.stop_reason, plan.usage)


def _events(plan: _Plan) -> Iterator[bytes]:
    start_usage = {**plan.usage, "output_tokens": 1}  # what Anthropic reports before any output
    yield sse_event({"type": "message_start", "message": _message(plan, [], None, start_usage)})
    if plan.tool:
        block, kind, field = _tool_block(plan, {}), "input_json_delta", "partial_json"
    else:
        block, kind, field = {"type": "text", "text": ""}, "text_delta", "text"
    yield sse_event({"type": "content_block_start", "index": 0, "content_block": block})
    yield sse_event({"type": "ping"})
    if plan.fails_after_preamble:
        error = {"type": "rate_limit_error", "message": "Number of request tokens has exceeded"}
        yield sse_event({"type": "error", "error": error})
        return
    for number, piece in enumerate(plan.pieces):
        if plan.fails_mid_stream and number == MID_STREAM_DELTAS:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            yield sse_event({"type": "error", "error": error})
            return
        piece_delta = {"type": kind, field: piece}
        yield sse_event({"type": "content_block_delta", "index": 0, "delta": piece_delta})
    yield sse_event({"type": "content_block_stop", "index": 0})
    # Cumulative: Anthropic now repeats the input and cache counts here.
    final_usage = {
        name: plan.usage[name]
        for name in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    stop = {"stop_reason": plan.stop_reason, "stop_sequence": None}
    yield sse_event({"type": "message_delta", "delta": stop, "usage": final_usage})
    yield sse_event({"type": "message_stop"})


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    body = await _request_body(request)
    plan = _plan(state, body)
    if body.get("stream"):
        return await stream_events(request, _events(plan), state.options.stream_interval)
    return json_response(_whole(plan))


async def count_tokens(request: web.Request) -> web.Response:
    body = await _request_body(request)
    usage = anthropic_usage(body, 0)
    total = sum(
        usage[name]
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return json_response({"input_tokens": total})


def _model(model_id: str, display_name: str, created_at: str) -> JSON:
    return {"type": "model", "id": model_id, "display_name": display_name, "created_at": created_at}


MODELS = {model_id: _model(model_id, *rest) for model_id, *rest in CLAUDE_MODELS}


async def list_models(request: web.Request) -> web.Response:
    """A page of models, paged with limit and after_id or before_id, as Anthropic pages them."""
    check_headers(request)
    ids = list(MODELS)
    after, before = request.query.get("after_id"), request.query.get("before_id")
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise FakeAnthropicError(400, "limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise FakeAnthropicError(400, "limit: Input should be between 1 and 1000")
    for cursor in (after, before):
        if cursor is not None and cursor not in MODELS:
            raise FakeAnthropicError(400, f"Invalid cursor: {cursor}")
    if before is not None:
        end = ids.index(before)
        page, has_more = ids[max(0, end - limit) : end], end > limit
    else:
        start = ids.index(after) + 1 if after is not None else 0
        page, has_more = ids[start : start + limit], start + limit < len(ids)
    return json_response(
        {
            "data": [MODELS[model_id] for model_id in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


async def retrieve_model(request: web.Request) -> web.Response:
    check_headers(request)
    model_id = request.match_info["model_id"]
    if model_id not in MODELS:
        raise FakeAnthropicError(404, f"model: {model_id}")
    return json_response(MODELS[model_id])
