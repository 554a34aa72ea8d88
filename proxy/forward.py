"""The proxied call: authenticate, read the body, forward, and relay the answer back."""

from __future__ import annotations

import logging
import uuid

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.auth import authenticate
from proxy.errors import (
    ProxyError,
    invalid_request,
    request_too_large,
    upstream_timeout,
    upstream_unreachable,
)
from proxy.typedefs import SESSION, SETTINGS, SNAPSHOT
from proxy.upstream import client_headers, upstream_headers
from shared.durations import parse_duration

PREFIX = "/api/providers/openai/v1"
log = logging.getLogger("gateway.proxy")


async def handle(request: web.Request) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    app = request.app
    try:
        authenticate(request, app[SNAPSHOT])
        body = await read_body(request)
        return await forward(request, body, request_id)
    except ProxyError as error:
        return error.response(request_id)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise request_too_large(request.app[SETTINGS].proxy_max_body_bytes) from None


def request_timeout(request: web.Request, default: float) -> float:
    header = request.headers.get("x-request-timeout")
    if header is None:
        return default
    try:
        seconds = parse_duration(header)
    except ValueError:
        raise invalid_request(
            f"x-request-timeout: {header!r} is not a duration", "invalid_timeout"
        ) from None
    if seconds <= 0:
        raise invalid_request("x-request-timeout must be positive", "invalid_timeout")
    return seconds


def upstream_url(request: web.Request, base_url: str) -> URL:
    # The raw path and query go through as the client encoded them.
    return URL(base_url + request.raw_path[len(PREFIX) :], encoded=True)


async def forward(request: web.Request, body: bytes, request_id: str) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    timeout = request_timeout(request, settings.proxy_timeout)
    try:
        async with request.app[SESSION].request(
            request.method,
            upstream_url(request, settings.openai_base_url),
            data=body or None,
            headers=upstream_headers(request.headers, settings, request_id),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as upstream:
            headers = client_headers(upstream.headers, request_id)
            if upstream.content_type == "application/json":
                payload = await upstream.read()
                return web.Response(body=payload, status=upstream.status, headers=headers)
            return await relay(request, upstream, headers)
    except TimeoutError:
        raise upstream_timeout(timeout) from None
    except aiohttp.ClientError as error:
        raise upstream_unreachable(type(error).__name__) from None


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]
) -> web.StreamResponse:
    """Pass a streamed or binary answer through chunk by chunk, as it arrives."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (TimeoutError, aiohttp.ClientError) as error:
        # Too late for an error status: end the stream and let the client see it cut short.
        log.warning("upstream stream broken: %s", type(error).__name__)
        return response
    await response.write_eof()
    return response
