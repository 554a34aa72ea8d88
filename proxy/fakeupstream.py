"""A fast, deterministic fake of the OpenAI REST API (aiohttp), under the `/v1` prefix.

Used as the upstream in end-to-end tests, as the offline demo upstream
(`python -m proxy.fakeupstream --port 9000`) and as the benchmark upstream, so the hot path
does no logging and no tokenizer work.

Token-count rule (defined rather than measured, so that the fake needs no tokenizer and tests
can compute the expected usage by hand):

- a prompt costs the number of whitespace-separated words in every text it carries, plus 3 per
  message (chat `messages`, Responses `input` items, and `instructions`); legacy `prompt` and
  embedding `input` cost their words, or their length for token arrays;
- the reply is `options.stream_chunks` words of "Hello from the fake upstream." (repeated),
  capped by `max_tokens` / `max_completion_tokens` / `max_output_tokens`; one word is one
  streamed chunk and one completion token, so streamed and non-streamed forms of the same
  request carry the same text and the same usage;
- a chat tool call (the body has `tools` and the last message contains "call a tool") has a
  fixed argument string sent in 5 fragments: 5 completion tokens, never capped;
- `user == "cached"` reports half the prompt tokens (rounded down) as cached; reasoning tokens
  are always 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import math
import re
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

JSON = dict[str, Any]

# Fixed timestamps keep bodies deterministic.
CREATED = 1_700_000_000
REPLY_WORDS = ("Hello", "from", "the", "fake", "upstream.")
TOOL_ARGUMENT_FRAGMENTS: tuple[str, ...] = ('{"', "query", '": "', "fake", '"}')
MODELS = ("gpt-4o-mini", "gpt-4o", "o4-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
EMBEDDING_DIMENSIONS = 8
SPEECH_BYTES = bytes(range(256)) * 256  # 64 KiB
SPEECH_CHUNK = 16 * 1024
# A 1x1 transparent PNG.
IMAGE_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MODERATION_RESULT: JSON = {
    "flagged": False,
    "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
    "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0),
    "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


@dataclass
class FakeOptions:
    latency: float = 0.0  # seconds before answering (asyncio.sleep), 0 = none
    stream_interval: float = 0.0  # seconds between SSE events
    stream_chunks: int = 5  # content chunks (= completion tokens) per completion
    report_usage: bool = True  # False: never send usage, like some compatible servers
    fail_status: int | None = None  # answer every API call with this status and an error body
    record: bool = True  # keep every request in `FakeUpstream.recorded`


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes


@dataclass
class FakeUpstream:
    options: FakeOptions = field(default_factory=FakeOptions)
    recorded: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):024x}"


FAKE_UPSTREAM = web.AppKey("fake_upstream", FakeUpstream)


class FakeAPIError(Exception):
    """An OpenAI-shaped error answer, raised from a handler and rendered by the middleware."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# --- encoding helpers ------------------------------------------------------------------------


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error_payload(status: int, message: str, code: str | None, param: str | None) -> JSON:
    if status == 429:
        error_type = "requests"  # what the real API sends with code rate_limit_exceeded
    elif status >= 500:
        error_type = "server_error"
    else:
        error_type = "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


@lru_cache(maxsize=32)
def _failure_body(status: int) -> bytes:
    default_codes = {401: "invalid_api_key", 429: "rate_limit_exceeded", 404: "unknown_url"}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = f"Fake upstream failure: {status} {phrase}"
    return orjson.dumps(_error_payload(status, message, default_codes.get(status), None))


def _sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _sse_event(payload: JSON) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _stream(
    request: web.Request,
    events: Iterable[bytes],
    interval: float,
    headers: dict[str, str] = SSE_HEADERS,
) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        for index, event in enumerate(events):
            if interval and index:
                await asyncio.sleep(interval)
            # One write per event, so a proxy sees them arrive separately.
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream: nothing left to tell it
    return response


async def _json_body(request: web.Request) -> JSON:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise FakeAPIError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise FakeAPIError(400, "The request body must be a JSON object.")
    return body


def _multipart(request: web.Request, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Parse multipart/form-data from bytes: the recording middleware has consumed the stream."""
    match = re.search(r'boundary="?([^";]+)"?', request.headers.get("Content-Type", ""))
    if match is None:
        raise FakeAPIError(400, "Expected a multipart/form-data body.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:-1]:
        head, _, content = part[2:].partition(b"\r\n\r\n")
        header_text = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', header_text)
        filename = re.search(r'\bfilename="([^"]*)"', header_text)
        if name:
            fields[name.group(1)] = (filename and filename.group(1), content[:-2])
    return fields


# --- token accounting ------------------------------------------------------------------------


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _content_words(content: object) -> int:
    """Words of a message content: a string or a list of parts with a `text`."""
    if isinstance(content, list):
        return sum(_words(part.get("text")) for part in content if isinstance(part, dict))
    return _words(content)


def _input_tokens(value: object) -> int:
    """Legacy prompt / embedding input: a string, token array, or a list of either."""
    if isinstance(value, str):
        return _words(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        return sum(_input_tokens(item) for item in value)
    return 0


def _chat_prompt_tokens(messages: list[JSON]) -> int:
    return sum(_content_words(message.get("content")) + 3 for message in messages)


def _responses_input_tokens(body: JSON) -> int:
    items = body.get("input")
    items = [{"content": items}] if isinstance(items, str) else items or []
    tokens = _words(body.get("instructions")) + 3 if body.get("instructions") else 0
    for item in items:
        if isinstance(item, dict):
            tokens += _content_words(item.get("content", item.get("output"))) + 3
    return tokens


@lru_cache(maxsize=256)
def _reply(count: int) -> tuple[str, ...]:
    return tuple(("" if i == 0 else " ") + REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(count))


def _reply_pieces(options: FakeOptions, cap: object) -> tuple[tuple[str, ...], bool]:
    """The reply pieces (one token each) and whether the cap cut it short."""
    count = max(options.stream_chunks, 0)
    if isinstance(cap, int) and cap < count:
        return _reply(max(cap, 0)), True
    return _reply(count), False


def _cached(body: JSON, prompt_tokens: int) -> int:
    return prompt_tokens // 2 if body.get("user") == "cached" else 0


def _chat_usage(prompt: int, completion: int, cached: int) -> JSON:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- chat completions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything both answer forms share, so that they cannot disagree."""

    meta: JSON  # id, created, model, ...
    pieces: tuple[str, ...]  # content pieces, or tool-call argument fragments
    finish_reason: str
    usage: JSON | None  # None when usage is not reported
    tool: str | None = None  # function name when the reply is a tool call


def _wants_tool(body: JSON) -> str | None:
    tools, messages = body.get("tools"), body.get("messages") or []
    if not tools or not messages:
        return None
    last = messages[-1].get("content")
    text = " ".join(p.get("text", "") for p in last) if isinstance(last, list) else str(last or "")
    return tools[0].get("function", {}).get("name") if "call a tool" in text.lower() else None


def _chat_plan(state: FakeUpstream, body: JSON) -> _Plan:
    meta = _meta(state, body, "chatcmpl-")
    prompt = _chat_prompt_tokens(body.get("messages") or [])
    tool = _wants_tool(body)
    if tool:
        pieces, finish = TOOL_ARGUMENT_FRAGMENTS, "tool_calls"
    else:
        cap = body.get("max_completion_tokens")
        pieces, capped = _reply_pieces(
            state.options, body.get("max_tokens") if cap is None else cap
        )
        finish = "length" if capped else "stop"
    usage = _chat_usage(prompt, len(pieces), _cached(body, prompt))
    return _Plan(meta, pieces, finish, usage if state.options.report_usage else None, tool)


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


def _chat_completion(plan: _Plan) -> JSON:
    text = "".join(plan.pieces)
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if plan.tool:
        message.update(content=None, tool_calls=[_tool_call(plan, text)])
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    payload = {**plan.meta, "object": "chat.completion", "choices": [choice]}
    if plan.usage is not None:
        payload["usage"] = plan.usage
    return payload


def _chat_chunks(plan: _Plan, include_usage: bool) -> Iterator[bytes]:
    base = {**plan.meta, "object": "chat.completion.chunk"}
    with_usage = include_usage and plan.usage is not None
    if with_usage:
        base["usage"] = None  # the real API marks every chunk when usage was asked for

    def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

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
        yield _sse({**base, "choices": [], "usage": plan.usage})
    yield DONE


def _include_usage(body: JSON) -> bool:
    stream_options = body.get("stream_options")
    return isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    body = await _json_body(request)
    plan = _chat_plan(state, body)
    if body.get("stream"):
        chunks = _chat_chunks(plan, _include_usage(body))
        return await _stream(request, chunks, state.options.stream_interval)
    return _json(_chat_completion(plan))


# --- legacy completions ----------------------------------------------------------------------


def _completion_plan(state: FakeUpstream, body: JSON) -> _Plan:
    prompt = _input_tokens(body.get("prompt"))
    pieces, capped = _reply_pieces(state.options, body.get("max_tokens"))
    usage = _chat_usage(prompt, len(pieces), _cached(body, prompt))
    meta = _meta(state, body, "cmpl-")
    return _Plan(
        meta, pieces, "length" if capped else "stop", usage if state.options.report_usage else None
    )


def _text_choice(text: str, finish_reason: str | None) -> JSON:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _completion_chunks(plan: _Plan, include_usage: bool) -> Iterator[bytes]:
    base = {**plan.meta, "object": "text_completion"}
    with_usage = include_usage and plan.usage is not None
    if with_usage:
        base["usage"] = None
    for piece in plan.pieces:
        yield _sse({**base, "choices": [_text_choice(piece, None)]})
    yield _sse({**base, "choices": [_text_choice("", plan.finish_reason)]})
    if with_usage:
        yield _sse({**base, "choices": [], "usage": plan.usage})
    yield DONE


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    body = await _json_body(request)
    plan = _completion_plan(state, body)
    if body.get("stream"):
        chunks = _completion_chunks(plan, _include_usage(body))
        return await _stream(request, chunks, state.options.stream_interval)
    choice = _text_choice("".join(plan.pieces), plan.finish_reason)
    payload = {**plan.meta, "object": "text_completion", "choices": [choice]}
    if plan.usage is not None:
        payload["usage"] = plan.usage
    return _json(payload)


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
    prompt = _responses_input_tokens(body)
    pieces, capped = _reply_pieces(state.options, body.get("max_output_tokens"))
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _cached(body, prompt), "cache_write_tokens": 0},
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
        yield _sse_event(event)


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    body = await _json_body(request)
    plan = _response_plan(state, body)
    if body.get("stream"):
        events = _numbered(_response_events(plan))
        return await _stream(request, events, state.options.stream_interval)
    return _json(plan.final())


# --- embeddings, moderations, images ---------------------------------------------------------


def _embedding_inputs(value: object) -> list[object]:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, int) for v in value)
    ):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def _vector_bytes(item: object, dimensions: int) -> bytes:
    seed = zlib.crc32(orjson.dumps(item))
    return struct.pack(f"<{dimensions}f", *(math.sin(seed + i) for i in range(dimensions)))


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    body = await _json_body(request)
    inputs = _embedding_inputs(body.get("input"))
    dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        packed = _vector_bytes(item, dimensions)
        # Floats go out float32-rounded, so both encodings decode to the same numbers.
        vector = (
            base64.b64encode(packed).decode()
            if as_base64
            else struct.unpack(f"<{dimensions}f", packed)
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = _input_tokens(inputs)
    payload: JSON = {"object": "list", "data": data, "model": body.get("model", "")}
    if state.options.report_usage:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json(payload)


async def moderations(request: web.Request) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    body = await _json_body(request)
    value = body.get("input")
    count = len(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else 1
    model = body.get("model") or "omni-moderation-latest"
    return _json(
        {"id": state.new_id("modr-"), "model": model, "results": [MODERATION_RESULT] * count}
    )


async def image_generations(request: web.Request) -> web.Response:
    body = await _json_body(request)
    count = int(body.get("n") or 1)
    if body.get("response_format") == "url":
        image = {"url": "https://fake-upstream.invalid/image.png", "revised_prompt": None}
    else:
        image = {"b64_json": IMAGE_B64, "revised_prompt": None}
    return _json({"created": CREATED, "data": [image] * count})


# --- audio and files -------------------------------------------------------------------------


async def audio_speech(request: web.Request) -> web.StreamResponse:
    await _json_body(request)
    chunks = (SPEECH_BYTES[i : i + SPEECH_CHUNK] for i in range(0, len(SPEECH_BYTES), SPEECH_CHUNK))
    interval = request.app[FAKE_UPSTREAM].options.stream_interval
    return await _stream(request, chunks, interval, {"Content-Type": "audio/mpeg"})


async def audio_transcriptions(request: web.Request) -> web.Response:
    fields = _multipart(request, await request.read())
    if "file" not in fields:
        raise FakeAPIError(400, "Missing required parameter: 'file'.", param="file")
    text = " ".join(REPLY_WORDS)
    response_format = fields.get("response_format", (None, b"json"))[1].decode()
    if response_format in ("text", "srt", "vtt"):
        return web.Response(text=text, content_type="text/plain")
    return _json({"text": text})


def _file_object(stored: StoredFile) -> JSON:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": CREATED,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


async def upload_file(request: web.Request) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    fields = _multipart(request, await request.read())
    if "file" not in fields:
        raise FakeAPIError(400, "Missing required parameter: 'file'.", param="file")
    filename, data = fields["file"]
    purpose = fields.get("purpose", (None, b"user_data"))[1].decode()
    stored = StoredFile(state.new_id("file-"), filename or "upload", purpose, data)
    state.files[stored.id] = stored
    return _json(_file_object(stored))


def _stored_file(request: web.Request) -> StoredFile:
    file_id = request.match_info["file_id"]
    stored = request.app[FAKE_UPSTREAM].files.get(file_id)
    if stored is None:
        raise FakeAPIError(404, f"No such File object: {file_id}", param="id")
    return stored


async def retrieve_file(request: web.Request) -> web.Response:
    return _json(_file_object(_stored_file(request)))


async def file_content(request: web.Request) -> web.Response:
    return web.Response(body=_stored_file(request).data, content_type="application/octet-stream")


# --- models and fallbacks --------------------------------------------------------------------


def _model(model_id: str) -> JSON:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}


MODELS_BODY = orjson.dumps({"object": "list", "data": [_model(m) for m in MODELS]})
NOT_FOUND_BODY = orjson.dumps(
    _error_payload(404, "Invalid URL: no such route on the fake upstream.", "unknown_url", None)
)


async def list_models(request: web.Request) -> web.Response:
    return web.Response(body=MODELS_BODY, content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    if model_id not in MODELS:
        raise FakeAPIError(
            404, f"The model '{model_id}' does not exist", "model_not_found", "model"
        )
    return _json(_model(model_id))


async def unknown_route(request: web.Request) -> web.Response:
    return web.Response(status=404, body=NOT_FOUND_BODY, content_type="application/json")


# --- middleware, headers, app ----------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def fake_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[FAKE_UPSTREAM]
    options = state.options
    if options.record:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = await request.read()
        state.recorded.append(
            RecordedRequest(request.method, request.path, request.query_string, headers, body)
        )
    if options.latency:
        await asyncio.sleep(options.latency)
    if options.fail_status is not None:
        status = options.fail_status
        return web.Response(
            status=status, body=_failure_body(status), content_type="application/json"
        )
    try:
        return await handler(request)
    except FakeAPIError as error:
        return _json(
            _error_payload(error.status, error.message, error.code, error.param), error.status
        )


async def _api_headers(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[FAKE_UPSTREAM]
    headers = response.headers
    headers["x-request-id"] = state.new_id("req_")
    headers["openai-processing-ms"] = str(int(state.options.latency * 1000))
    headers["openai-version"] = "2020-10-01"
    headers["x-ratelimit-limit-requests"] = "10000"
    headers["x-ratelimit-remaining-requests"] = "9999"


def create_fake_upstream(options: FakeOptions | None = None) -> web.Application:
    # Room for file and audio uploads (aiohttp's default limit is 1 MiB).
    app = web.Application(middlewares=[fake_middleware], client_max_size=64 * 1024**2)
    app[FAKE_UPSTREAM] = FakeUpstream(options or FakeOptions())
    app.on_response_prepare.append(_api_headers)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/images/generations", image_generations)
    app.router.add_post("/v1/audio/speech", audio_speech)
    app.router.add_post("/v1/audio/transcriptions", audio_transcriptions)
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files/{file_id}", retrieve_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id}", retrieve_model)
    # Last, so that it only takes what nothing above matched (including a wrong method).
    app.router.add_route("*", "/{tail:.*}", unknown_route)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI API for tests, demos and benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--stream-interval", type=float, default=0.0, help="seconds between events")
    args = parser.parse_args(argv)
    options = FakeOptions(latency=args.latency, stream_interval=args.stream_interval)
    web.run_app(create_fake_upstream(options), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
