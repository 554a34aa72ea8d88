"""Encoding helpers: JSON and SSE bodies, request bodies, streaming."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from functools import lru_cache
from http import HTTPStatus

import orjson
from aiohttp import web

from proxy.fakeupstream.state import (
    CUT_CONNECTION,
    JSON,
    SSE_HEADERS,
    FakeAPIError,
)

# --- encoding helpers ------------------------------------------------------------------------


def json_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def error_payload(status: int, message: str, code: str | None, param: str | None) -> JSON:
    if status == 429:
        error_type = "requests"  # what the real API sends with code rate_limit_exceeded
    elif status >= 500:
        error_type = "server_error"
    else:
        error_type = "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


@lru_cache(maxsize=32)
def failure_body(status: int) -> bytes:
    default_codes = {401: "invalid_api_key", 429: "rate_limit_exceeded", 404: "unknown_url"}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = f"Fake upstream failure: {status} {phrase}"
    return orjson.dumps(error_payload(status, message, default_codes.get(status), None))


# Anthropic's error types by status (docs.anthropic.com, "Errors"); any other 5xx is api_error.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> bytes:
    error_type = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def refused_key_body(authorization: str) -> bytes:
    """The real API's 401 names the key it refused, masked."""
    key = authorization.removeprefix("Bearer ")
    masked = key[:5] + "*" * max(0, len(key) - 9) + key[-4:]
    message = (
        f"Incorrect API key provided: {masked}. You can find your API key at"
        " https://platform.openai.com/account/api-keys."
    )
    return orjson.dumps(error_payload(401, message, "invalid_api_key", None))


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(payload: JSON) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def stream_events(
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
            if event is CUT_CONNECTION:
                if request.transport is not None:
                    request.transport.abort()
                return response
            # One write per event, so a proxy sees them arrive separately.
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream: nothing left to tell it
    return response


async def read_json(request: web.Request) -> JSON:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise FakeAPIError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise FakeAPIError(400, "The request body must be a JSON object.")
    return body


def multipart_fields(request: web.Request, body: bytes) -> dict[str, tuple[str | None, bytes]]:
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
