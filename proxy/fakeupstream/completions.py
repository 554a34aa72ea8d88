"""Chat completions and legacy completions, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from proxy.fakeupstream.accounting import (
    cached_tokens,
    chat_prompt_tokens,
    chat_usage,
    echoed,
    input_tokens,
    reply_pieces,
)
from proxy.fakeupstream.state import (
    CONTENT_FILTER_RESULTS,
    CREATED,
    CUT_AFTER_CONTENT,
    CUT_CONNECTION,
    DONE,
    ERROR_AFTER_PREAMBLE,
    FAKE_UPSTREAM,
    JSON,
    PROMPT_FILTER_CHUNK,
    PROMPT_FILTER_RESULTS,
    TOOL_ARGUMENT_FRAGMENTS,
    FakeUpstream,
)
from proxy.fakeupstream.wire import (
    error_payload,
    json_response,
    read_json,
    sse,
    stream_events,
)

# --- chat completions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything both answer forms share, so that they cannot disagree."""

    meta: JSON  # id, created, model, ...
    pieces: tuple[str, ...]  # content pieces, or tool-call argument fragments
    finish_reason: str
    usage: JSON | None  # None when usage is not reported
    tool: str | None = None  # function name when the reply is a tool call
    fault: str = ""  # the stream fault trigger in the last message, if any


def _last_text(body: JSON) -> str:
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages else ""
    return " ".join(p.get("text", "") for p in last) if isinstance(last, list) else str(last or "")


def _wants_tool(body: JSON) -> str | None:
    tools = body.get("tools")
    if not tools or not body.get("messages"):
        return None
    wanted = "call a tool" in _last_text(body).lower()
    return tools[0].get("function", {}).get("name") if wanted else None


def _chat_plan(state: FakeUpstream, body: JSON) -> _Plan:
    meta = _meta(state, body, "chatcmpl-")
    prompt = chat_prompt_tokens(body.get("messages") or [])
    tool = _wants_tool(body)
    if tool:
        pieces, finish = TOOL_ARGUMENT_FRAGMENTS, "tool_calls"
    elif state.options.echo:  # the last message back, a few characters a piece
        pieces, finish = echoed(_last_text(body)), "stop"
    else:
        cap = body.get("max_completion_tokens")
        pieces, capped = reply_pieces(state.options, body.get("max_tokens") if cap is None else cap)
        finish = "length" if capped else "stop"
    usage = chat_usage(prompt, len(pieces), cached_tokens(body, prompt))
    last = str((body.get("messages") or [{}])[-1].get("content") or "")
    faults = (ERROR_AFTER_PREAMBLE, CUT_AFTER_CONTENT)
    fault = state.options.stream_fault or next((f for f in faults if f in last), "")
    return _Plan(meta, pieces, finish, usage if state.options.report_usage else None, tool, fault)


def _meta(state: FakeUpstream, body: JSON, prefix: str) -> JSON:
    return {
        "id": state.new_id(prefix),
        "created": CREATED,
        "model": body.get("model", ""),
        "system_fingerprint": "fp_fake",
    }


def _tool_call(plan: _Plan, arguments: str) -> JSON:
    call_id = "call_" + plan.meta["id"].removeprefix("chatcmpl-")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": plan.tool, "arguments": arguments},
    }


def _chat_completion(plan: _Plan, filters: bool) -> JSON:
    text = "".join(plan.pieces)
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if plan.tool:
        message.update(content=None, tool_calls=[_tool_call(plan, text)])
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    payload = {**plan.meta, "object": "chat.completion", "choices": [choice]}
    if filters:
        choice["content_filter_results"] = CONTENT_FILTER_RESULTS
        payload["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    if plan.usage is not None:
        payload["usage"] = plan.usage
    return payload


def _chat_chunks(plan: _Plan, include_usage: bool, filters: bool) -> Iterator[bytes]:
    base = {**plan.meta, "object": "chat.completion.chunk"}
    with_usage = include_usage and plan.usage is not None
    if with_usage:
        base["usage"] = None  # the real API marks every chunk when usage was asked for

    def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if filters:  # Azure judges content; the role and finish chunks carry an empty verdict
            judged = delta.get("content") or delta.get("tool_calls")
            choice["content_filter_results"] = CONTENT_FILTER_RESULTS if judged else {}
        return sse({**base, "choices": [choice]})

    if filters:
        yield sse(PROMPT_FILTER_CHUNK)
    if plan.fault == ERROR_AFTER_PREAMBLE:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        quota = "You exceeded your current quota."
        yield sse(error_payload(429, quota, "insufficient_quota", None))
        return
    if plan.fault == CUT_AFTER_CONTENT:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        yield from (chunk({"content": piece}) for piece in plan.pieces[:2])
        yield CUT_CONNECTION
        return
    if plan.tool:
        call = {"index": 0, **_tool_call(plan, "")}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [call]})
        for fragment in plan.pieces:
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in plan.pieces:
            yield chunk({"content": piece})
    yield chunk({}, plan.finish_reason)
    if with_usage:
        yield sse({**base, "choices": [], "usage": plan.usage})
    yield DONE


def _include_usage(body: JSON) -> bool:
    stream_options = body.get("stream_options")
    return isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await answer_chat(request, await read_json(request))


async def answer_chat(
    request: web.Request, body: JSON, filters: bool = False
) -> web.StreamResponse:
    """A chat completion; with Azure's content-filter results when `filters`."""
    state = request.app[FAKE_UPSTREAM]
    plan = _chat_plan(state, body)
    if body.get("stream"):
        chunks = _chat_chunks(plan, _include_usage(body), filters)
        return await stream_events(request, chunks, state.options.stream_interval)
    return json_response(_chat_completion(plan, filters))


# --- legacy completions ----------------------------------------------------------------------


def _completion_plan(state: FakeUpstream, body: JSON) -> _Plan:
    prompt = input_tokens(body.get("prompt"))
    pieces, capped = reply_pieces(state.options, body.get("max_tokens"))
    usage = chat_usage(prompt, len(pieces), cached_tokens(body, prompt))
    meta = _meta(state, body, "cmpl-")
    return _Plan(
        meta, pieces, "length" if capped else "stop", usage if state.options.report_usage else None
    )


def _text_choice(text: str, finish_reason: str | None, filters: bool) -> JSON:
    choice: JSON = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    if filters:
        choice["content_filter_results"] = CONTENT_FILTER_RESULTS if text else {}
    return choice


def _completion_chunks(plan: _Plan, include_usage: bool, filters: bool) -> Iterator[bytes]:
    base = {**plan.meta, "object": "text_completion"}
    with_usage = include_usage and plan.usage is not None
    if with_usage:
        base["usage"] = None
    if filters:
        yield sse(PROMPT_FILTER_CHUNK)
    for piece in plan.pieces:
        yield sse({**base, "choices": [_text_choice(piece, None, filters)]})
    yield sse({**base, "choices": [_text_choice("", plan.finish_reason, filters)]})
    if with_usage:
        yield sse({**base, "choices": [], "usage": plan.usage})
    yield DONE


async def completions(request: web.Request) -> web.StreamResponse:
    return await answer_completion(request, await read_json(request))


async def answer_completion(
    request: web.Request, body: JSON, filters: bool = False
) -> web.StreamResponse:
    """A legacy completion; with Azure's content-filter results when `filters`."""
    state = request.app[FAKE_UPSTREAM]
    plan = _completion_plan(state, body)
    if body.get("stream"):
        chunks = _completion_chunks(plan, _include_usage(body), filters)
        return await stream_events(request, chunks, state.options.stream_interval)
    choice = _text_choice("".join(plan.pieces), plan.finish_reason, filters)
    payload = {**plan.meta, "object": "text_completion", "choices": [choice]}
    if filters:
        payload["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    if plan.usage is not None:
        payload["usage"] = plan.usage
    return json_response(payload)
