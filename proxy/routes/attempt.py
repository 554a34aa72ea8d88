"""One attempt of a route step: the exchange with its target, answered in OpenAI's shape.

A failure that can succeed on retry (connection error, timeout, 408, 409, 429, 5xx, an in-band
error before any content) raises AttemptFailed with the answer the client gets should nothing
else succeed; any other answer, errors included, is the call's. A stream is held back until its
first content-bearing event: up to there it can still fail over. After it, a broken stream ends
with an error event (no [DONE]) and what streamed is billed.
"""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import (
    ProxyError,
    openai_shape,
    upstream_timeout,
    upstream_unreachable,
)
from proxy.forward import (
    add_rate_limit_headers,
    check_credential,
    open_upstream,
    read_answer,
    take_stream_usage,
)
from proxy.policies.restore import screened_answer
from proxy.routes.cache import StreamCollector
from proxy.routes.steps import StepCall
from proxy.translate.sse import EventTooLarge
from proxy.upstream import client_headers

RETRIED_STATUSES = frozenset({408, 409, 429})
log = logging.getLogger("gateway.proxy")


class AttemptFailed(Exception):
    def __init__(
        self, answer: web.Response, retry_after: float | None = None, *, retry: bool = True
    ) -> None:
        super().__init__(answer.status)
        self.answer = answer
        self.retry_after = retry_after  # seconds upstream asked to wait, when it said
        self.retry = retry  # False: on to the next step, this one will not do better


def retried(status: int) -> bool:
    return status in RETRIED_STATUSES or status >= 500


def retry_after_of(headers: CIMultiDictProxy[str]) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or retry-after-ms."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


async def attempt(
    request: web.Request,
    planned: StepCall,
    limits: aiohttp.ClientTimeout,
    route_headers: dict[str, str],
    collector: StreamCollector | None,
) -> web.StreamResponse:
    call = planned.call
    call.status, call.usage, call.streamed = 0, None, False
    call.upstream_started, call.upstream_ended = time.perf_counter(), 0.0
    seconds = limits.sock_read or limits.total or 0.0
    try:
        async with open_upstream(request, call, planned.headers, limits) as raw_upstream:
            upstream = screened_answer(call, raw_upstream)  # the key's policy may restore
            try:
                check_credential(call, upstream.status)
            except ProxyError as error:  # another step may hold a working credential
                raise AttemptFailed(error.response(call.request_id), retry=False) from None
            headers = client_headers(upstream.headers, call.request_id)
            add_rate_limit_headers(call, headers)
            headers.update(route_headers)
            status = upstream.status
            if not 200 <= status < 300:
                body = await upstream.read()
                call.upstream_ended = time.perf_counter()
                body = planned.format.error(body)
                answer = web.Response(body=body, status=status, headers=headers)
                if retried(status):
                    raise AttemptFailed(answer, retry_after_of(upstream.headers))
                return answer
            if upstream.content_type == "text/event-stream":
                call.streamed = True
                return await relay(request, upstream, headers, planned, collector)
            body = planned.format.answer(await read_answer(call, upstream))
            return web.Response(body=body, status=status, headers=headers)
    except TimeoutError:
        raise AttemptFailed(upstream_timeout(seconds).response(call.request_id)) from None
    except aiohttp.ClientError as error:
        failure = upstream_unreachable(type(error).__name__)
        raise AttemptFailed(failure.response(call.request_id)) from None
    finally:
        call.upstream_ended = call.upstream_ended or time.perf_counter()


def in_band_failure(error: dict[str, Any], request_id: str) -> web.Response:
    """What a client gets for an error event before any content, should no step do better."""
    inner = error.get("error")
    message = inner.get("message") if isinstance(inner, dict) else None
    failure = ProxyError(
        502,
        f"upstream failed in its stream: {message if isinstance(message, str) else 'an error'}",
        "upstream_error",
        "upstream_stream_error",
    )
    return failure.response(request_id)


def broken_stream_event(error: BaseException) -> bytes:
    failure = ProxyError(
        502,
        f"the upstream stream broke: {type(error).__name__}",
        "upstream_error",
        "upstream_stream_broken",
    )
    return b"data: " + orjson.dumps(openai_shape(failure)) + b"\n\n"


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: CIMultiDict[str],
    planned: StepCall,
    collector: StreamCollector | None,
) -> web.StreamResponse:
    call = planned.call
    meter = call.target.provider.stream_meter(call)
    watch = planned.format.watch(meter, planned.include_usage)
    held: list[bytes] = []
    response: web.StreamResponse | None = None

    async def commit() -> web.StreamResponse:
        committed = web.StreamResponse(status=upstream.status, headers=headers)
        await committed.prepare(request)
        await committed.write(b"".join(held))
        return committed

    try:
        async for chunk in upstream.content.iter_any():
            out, whole = watch.feed(chunk)
            if collector is not None:
                collector.feed(whole)
            if response is not None:
                if out:
                    await response.write(out)
                continue
            if watch.error is not None and not watch.content_started:
                raise AttemptFailed(in_band_failure(watch.error, call.request_id))
            held.append(out)
            if watch.content_started:
                response = await commit()
        tail = watch.flush()
        if response is None:
            if not watch.complete:
                raise aiohttp.ClientPayloadError("the stream ended before any content")
            response = await commit()
        if tail:
            await response.write(tail)
        if collector is not None and watch.usage_chunk:
            collector.feed(watch.usage_chunk)
        await response.write_eof()
    except (TimeoutError, aiohttp.ClientError, EventTooLarge) as error:
        if response is None:
            if isinstance(error, EventTooLarge):  # no stream a client could read
                raise aiohttp.ClientPayloadError(str(error)) from None
            raise
        log.warning("upstream stream broken: %s", type(error).__name__)
        await response.write(broken_stream_event(error))
        await response.write_eof()
    finally:
        call.upstream_ended = time.perf_counter()
        if response is not None:
            call.reported_model = meter.model
            await take_stream_usage(meter, call)
    return response
