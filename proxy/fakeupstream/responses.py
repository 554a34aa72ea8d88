"""The Responses API, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from proxy.fakeupstream.accounting import (
    cached_tokens,
    reply_pieces,
    responses_input_tokens,
)
from proxy.fakeupstream.state import (
    CREATED,
    FAKE_UPSTREAM,
    JSON,
    FakeUpstream,
)
from proxy.fakeupstream.wire import (
    json_response,
    read_json,
    sse_event,
    stream_events,
)

# --- responses -------------------------------------------------------------------------------


def _response_object(body: JSON, response_id: str, status: str, output: list[JSON]) -> JSON:
    return {
        "id": response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "completed_at": CREATED if status == "completed" else None,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", ""),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _message_item(item_id: str, status: str, text: str | None) -> JSON:
    content = [] if text is None else [_output_text(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass(frozen=True, slots=True)
class _ResponsePlan:
    body: JSON
    response_id: str
    item_id: str
    pieces: tuple[str, ...]
    status: str  # completed | incomplete
    usage: JSON | None

    def final(self) -> JSON:
        item = _message_item(self.item_id, self.status, "".join(self.pieces))
        response = _response_object(self.body, self.response_id, self.status, [item])
        if self.usage is not None:
            response["usage"] = self.usage
        else:
            del response["usage"]
        return response


def _response_plan(state: FakeUpstream, body: JSON) -> _ResponsePlan:
    prompt = responses_input_tokens(body)
    pieces, capped = reply_pieces(state.options, body.get("max_output_tokens"))
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": cached_tokens(body, prompt),
            "cache_write_tokens": 0,
        },
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + len(pieces),
    }
    return _ResponsePlan(
        body,
        state.new_id("resp_"),
        state.new_id("msg_"),
        pieces,
        "incomplete" if capped else "completed",
        usage if state.options.report_usage else None,
    )


def _response_events(plan: _ResponsePlan) -> Iterator[JSON]:
    started = _response_object(plan.body, plan.response_id, "in_progress", [])
    text = "".join(plan.pieces)
    where = {"item_id": plan.item_id, "output_index": 0, "content_index": 0}
    yield {"type": "response.created", "response": started}
    yield {"type": "response.in_progress", "response": started}
    yield {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": _message_item(plan.item_id, "in_progress", None),
    }
    yield {"type": "response.content_part.added", **where, "part": _output_text("")}
    for piece in plan.pieces:
        yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
    yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
    yield {"type": "response.content_part.done", **where, "part": _output_text(text)}
    final = plan.final()
    yield {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]}
    yield {"type": f"response.{plan.status}", "response": final}


def _numbered(events: Iterator[JSON]) -> Iterator[bytes]:
    for number, event in enumerate(events):
        event["sequence_number"] = number
        yield sse_event(event)


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    body = await read_json(request)
    plan = _response_plan(state, body)
    if body.get("stream"):
        events = _numbered(_response_events(plan))
        return await stream_events(request, events, state.options.stream_interval)
    return json_response(plan.final())
