"""The proxied call in stages: authenticate, admit, forward (metering as it relays), settle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from proxy.access import vet
from proxy.admission import admit
from proxy.auth import authenticate
from proxy.calls import Call, new_call
from proxy.costs import cost_usd
from proxy.endpoints import Billing
from proxy.errors import (
    ProxyError,
    invalid_request,
    request_too_large,
    upstream_auth_failed,
    upstream_timeout,
    upstream_unreachable,
)
from proxy.jobs import JOB_CREATIONS, track
from proxy.jobs.hook import Creation, Read
from proxy.metering import Usage, answer_text, counted_usage
from proxy.paths import upstream_url
from proxy.policies.restore import screened_answer
from proxy.policies.stage import screen
from proxy.providers import Provider
from proxy.providers.base import Meter
from proxy.requestlog import stream_record
from proxy.targets import require_model_allowed
from proxy.telemetry import record_call, usage_event
from proxy.typedefs import (
    CALL_LOG,
    LIMITS,
    LOCAL_LIMITS,
    METRICS,
    POLICIES,
    PRICING,
    SESSION,
    SETTINGS,
    SETTLER,
    SNAPSHOT,
    TARGETS,
    USERS,
)
from proxy.upstream import CREDENTIAL_REFUSED, client_headers, upstream_headers
from shared.durations import parse_duration
from shared.limit_keys import to_nano
from shared.limits import Settlement

MAX_REQUEST_ID = 128
T = TypeVar("T")
log = logging.getLogger("gateway.proxy")


def request_id_of(request: web.Request) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return os.urandom(16).hex()


def handler_of(provider: Provider) -> Handler:
    async def handle_call(request: web.Request) -> web.StreamResponse:
        return await handle(request, provider)

    return handle_call


async def handle(request: web.Request, provider: Provider) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request_id_of(request)
    app = request.app
    call: Call | None = None
    outcome = (0, "")
    try:
        key = authenticate(request, app[SNAPSHOT])
        target = app[TARGETS].of(provider, key, request.match_info.get("setting_name", ""))
        call = new_call(request, target, key, await read_body(request), request_id)
        require_model_allowed(target, call.model)
        vet(call, request, app[USERS])
        screen(call, app[POLICIES])
        await admit(call, app[LIMITS], app[LOCAL_LIMITS], app[PRICING], app[METRICS].redis_errors)
        # Batches, fine-tuning and background responses: created, read or cancelled.
        tracked = provider.tracks_jobs and (call.endpoint in JOB_CREATIONS or not call.body)
        job = await track(app, request.method, call) if tracked else None
        response = await forward_past_the_client(request, call, job)
        outcome = (response.status, "")
        return response
    except ProxyError as error:
        outcome = (error.status, error.code)
        return provider.error_response(error, request_id)
    finally:
        finish(app, request, provider, request_id, call, outcome, started)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise request_too_large(request.app[SETTINGS].proxy_max_body_bytes) from None
    except web.RequestPayloadError:  # a body its Content-Encoding cannot undo, say
        raise invalid_request("the request body cannot be read", "invalid_body") from None


def request_timeout(request: web.Request, ceiling: float) -> float:
    """The client's x-request-timeout, capped: a call may not outlive its reservation."""
    header = request.headers.get("x-request-timeout")
    if header is None:
        return ceiling
    try:
        seconds = parse_duration(header)
    except ValueError:
        raise invalid_request(
            f"x-request-timeout: {header!r} is not a duration: give it a unit, as in 30s or 2m",
            "invalid_timeout",
        ) from None
    if seconds <= 0:
        raise invalid_request("x-request-timeout must be positive", "invalid_timeout")
    return min(seconds, ceiling)


async def forward_past_the_client(
    request: web.Request, call: Call, job: Creation | Read | None
) -> web.StreamResponse:
    """Forward; when the client leaves (its handler is cancelled), the exchange goes on if need be.

    Upstream bills a non-streamed answer in full whether or not anyone reads it, so that answer
    is read and metered in a task of its own, which the client's leaving does not cancel, within
    the call's timeout; `finish` then charges it, and a job it created is recorded. A stream
    stops with its client and is billed for what was streamed: it needs no task (and its three
    extra turns of the event loop).
    """
    if call.stream:
        return await forward_and_track(request, call, job)
    return await outliving_the_client(forward_and_track(request, call, job))


async def outliving_the_client(exchange: Awaitable[T]) -> T:
    """`exchange`'s outcome; should the client leave, the exchange goes on to its end."""
    task = asyncio.ensure_future(exchange)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task  # nobody is left to answer, whatever the outcome
        raise


async def forward_and_track(
    request: web.Request, call: Call, job: Creation | Read | None
) -> web.StreamResponse:
    response = await forward(request, call)
    if job is not None:
        job.answered(response)
    return response


async def forward(request: web.Request, call: Call) -> web.StreamResponse:
    ceiling = request.app[SETTINGS].proxy_timeout
    timeout = request_timeout(request, ceiling)
    # The session's own ClientTimeout is the ceiling's: building one a call costs 2 µs.
    limits = (
        aiohttp.ClientTimeout(total=timeout) if timeout < ceiling else request.app[SESSION].timeout
    )
    target = call.target
    call.upstream_started = time.perf_counter()
    try:
        async with open_upstream(
            request, call, upstream_headers(request.headers, target, call.request_id), limits
        ) as upstream:
            upstream = screened_answer(call, upstream)
            check_credential(call, upstream.status)
            headers = client_headers(upstream.headers, call.request_id)
            add_rate_limit_headers(call, headers)
            if upstream.content_type == "application/json":
                body = await read_answer(call, upstream)
                return web.Response(body=body, status=upstream.status, headers=headers)
            call.streamed = upstream.content_type == "text/event-stream"
            if call.streamed and call.metered:
                return await relay_metered(request, upstream, headers, call)
            return await relay(request, upstream, headers, call)
    except TimeoutError:
        raise upstream_timeout(timeout) from None
    except aiohttp.ClientError as error:
        raise upstream_unreachable(type(error).__name__) from None


def open_upstream(
    request: web.Request, call: Call, headers: dict[str, str], timeout: aiohttp.ClientTimeout
) -> aiohttp.client._RequestContextManager:
    """The call's exchange with its target, to be entered (`async with`)."""
    target = call.target
    return request.app[SESSION].request(
        request.method,
        upstream_url(target.base_url, call.upstream_path, call.upstream_query),
        data=call.body or None,
        headers=headers,
        timeout=timeout,
        allow_redirects=False,
    )


def check_credential(call: Call, status: int) -> None:
    """Record upstream's status; a refused credential is the operator's to fix (502)."""
    call.status = status
    alarm = call.target.alarm
    if status in CREDENTIAL_REFUSED:
        alarm.refused(status, call.target.credential_source)
        raise upstream_auth_failed(status)
    if alarm.refusing:
        alarm.accepted()


async def read_answer(call: Call, upstream: aiohttp.ClientResponse) -> bytes:
    """A whole answer's body, metered when it is a successful metered one."""
    body = await upstream.read()
    call.upstream_ended = time.perf_counter()
    if call.key.should_log_response:
        call.response_body = body
    if call.metered and 200 <= upstream.status < 300:
        call.usage, call.reported_model = call.target.provider.usage_of_body(body)
        if call.usage is None and call.billing is Billing.TOKENS:
            # A compatible server that reports no usage: count the tokens.
            call.usage = await asyncio.to_thread(counted_answer, call, body)
    return body


def add_rate_limit_headers(call: Call, headers: CIMultiDict[str]) -> None:
    admission = call.admission
    if admission is not None and admission.remaining_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(call.key.rate_limit_over_time)
        headers["x-ratelimit-remaining-requests"] = str(admission.remaining_requests)


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str], call: Call
) -> web.StreamResponse:
    """Pass a binary or unmetered answer through chunk by chunk, as it arrives."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except (TimeoutError, aiohttp.ClientError) as error:
        # Too late for an error status: end the stream and let the client see it cut short.
        log.warning("upstream stream broken: %s", type(error).__name__)
    finally:
        call.upstream_ended = time.perf_counter()
    return response


async def relay_metered(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str], call: Call
) -> web.StreamResponse:
    """Relay SSE event by event, reading the usage out of it; bill what passed if cut short."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    meter = call.target.provider.stream_meter(call)
    record = stream_record(call)
    try:
        async for chunk in upstream.content.iter_any():
            if record is not None:
                record.feed(chunk)
            relayed = meter.feed(chunk)
            if relayed:
                await response.write(relayed)
        tail = meter.flush()
        if tail:
            await response.write(tail)
        await response.write_eof()
    except (TimeoutError, aiohttp.ClientError) as error:
        log.warning("upstream stream broken: %s", type(error).__name__)
    finally:
        call.upstream_ended = time.perf_counter()
        if 200 <= call.status < 300:
            call.reported_model = meter.model
            await take_stream_usage(meter, call)
    return response


async def take_stream_usage(meter: Meter, call: Call) -> None:
    """The call's usage as its stream reported it or, cut short, as counted off the event loop;
    a client that leaves while it is counted (the handler cancelled) does not stop the count,
    so the call is still billed."""
    if meter.usage is not None:
        call.usage = meter.usage
        return
    counting = asyncio.ensure_future(
        asyncio.to_thread(meter.usage_when_cut, call.prompt_tokens_estimate)
    )
    try:
        call.usage = await asyncio.shield(counting)
    except asyncio.CancelledError:
        call.usage = await counting
        raise


# Counting with tiktoken takes a large part of a second for a long prompt: off the event loop.
def counted_answer(call: Call, body: bytes) -> Usage:
    return counted_usage(call.prompt_tokens_estimate(), answer_text(body), call.model)


def finish(
    app: web.Application,
    request: web.Request,
    provider: Provider,
    request_id: str,
    call: Call | None,
    outcome: tuple[int, str],
    started: float,
) -> None:
    """Charge, release, and record the call; runs even when the client went away mid-call."""
    if call is not None and not outcome[0]:
        outcome = (call.status or 499, "client_closed")  # cancelled: the client disconnected
    latency = time.perf_counter() - started
    cost = charge(app, call, outcome[0]) if call is not None else 0
    if call is not None:
        admission = call.admission
        if admission is not None and admission.local:
            app[LOCAL_LIMITS].settled(call.key, admission, cost)
        reservation = admission.reservation if admission else ""
        # A refusal by the key's policy, and a route's cache hit, are recorded too, though no
        # upstream was asked.
        recorded = (
            call.upstream_started or outcome[1] == "policy_violation" or call.route is not None
        )
        event = usage_event(call, cost, latency) if recorded else None
        if event is not None or reservation:
            app[SETTLER].submit(Settlement(call.key, cost, reservation, event, call.user))
        if admission is not None and admission.lease is not None:
            admission.lease.settled(admission, cost)  # after the charge: the budget goes behind it
    record_call(
        app[METRICS],
        app[CALL_LOG],
        request_id,
        request,
        provider.name,
        call,
        outcome,
        latency,
        cost,
    )


def charge(app: web.Application, call: Call, status: int) -> int:
    """What the call costs in nano-USD: only successful answers with a known price are billed."""
    if call.payload is None or not 200 <= status < 300:
        return 0
    cost = cost_usd(call, app[PRICING])
    if cost is None:
        metrics = app[METRICS]
        metrics.unpriced.inc(model=metrics.model_label(call.reported_model or call.model))
        return 0
    return to_nano(cost)
