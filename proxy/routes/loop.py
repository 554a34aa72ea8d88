"""`POST /api/routes{path}`: a loop around "resolve target → forward" with a retry policy.

    route match → authenticate → the key among the route's keyIds → resolve every step's target
    → cache lookup (a hit: admit without a reservation, answer) → admit once, reserving for the
    dearest step → for each step not cooling down, its attempts (backoff between them) → settle
    and record: an event per attempt, the call billed at the step that served it

Every answer of a route says which step served it (or failed last) in x-route-step and how many
upstream attempts the call made in x-route-attempts; a route with its cache on says x-cache.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.access import vet
from proxy.admission import admit_reserving, reservation_nano
from proxy.auth import authenticate
from proxy.calls import CHAT, EMBEDDINGS, Call, json_object
from proxy.costs import cost_usd
from proxy.errors import ProxyError, not_found
from proxy.forward import (
    add_rate_limit_headers,
    finish,
    outliving_the_client,
    read_body,
    request_id_of,
    request_timeout,
)
from proxy.policies.stage import screen
from proxy.providers import OPENAI
from proxy.routes.attempt import AttemptFailed, attempt
from proxy.routes.cache import CachedAnswer, StreamCollector, cache_key
from proxy.routes.model import Route, Step
from proxy.routes.steps import StepCall, plan_steps
from proxy.telemetry import usage_event
from proxy.translate.anthropic_request import wants_usage
from proxy.typedefs import (
    COOL_DOWNS,
    LIMITS,
    LOCAL_LIMITS,
    METRICS,
    POLICIES,
    PRICING,
    ROUTE_CACHE,
    ROUTES,
    SETTINGS,
    SETTLER,
    SNAPSHOT,
    TARGETS,
    USERS,
)
from shared.admissions import has_limits, limited_user
from shared.limit_keys import to_nano
from shared.limits import Settlement
from shared.models import Key

ENDPOINTS = (("/chat/completions", CHAT), ("/embeddings", EMBEDDINGS))


def endpoint_of(route: Route | None) -> str:
    if route is not None:
        for suffix, endpoint in ENDPOINTS:
            if route.path.endswith(suffix):
                return endpoint
    return ""


def route_forbidden() -> ProxyError:
    return ProxyError(
        403, "this key may not call this route: it is not among its keyIds",
        "permission_error", "route_not_allowed",
    )  # fmt: skip


@dataclass(slots=True)
class RouteRun:
    """One call of a route, as it goes from step to step."""

    route: Route
    step: int = 0  # the step that served the call, or failed last
    attempts: int = 0  # upstream attempts made, over every step
    call: Call | None = None  # the call finished and billed: the last one attempted
    unsent: bytes | None = None  # the event of a failed attempt, unless it is the last
    cache_hit: bool | None = None  # None: the route keeps no cache, or not for this request
    collector: StreamCollector | None = None  # the stream of the attempt that served, for the cache
    reservation: int = 0  # nano-USD held for the call: its dearest step's most

    def headers(self) -> dict[str, str]:
        headers = {"x-route-step": str(self.step), "x-route-attempts": str(self.attempts)}
        if self.route.cache_enabled:
            headers["x-cache"] = "hit" if self.cache_hit else "miss"
        return headers


async def handle_route(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request_id_of(request)
    app = request.app
    route = app[ROUTES].get("/" + request.match_info["route_path"])
    endpoint = endpoint_of(route)
    if route is None or not endpoint:
        return not_found(request.path).response(request_id)
    run = RouteRun(route)
    outcome = (0, "")
    response: web.StreamResponse | None = None
    try:
        key = authenticate(request, app[SNAPSHOT])
        if not route.allows(key.key_id):
            raise route_forbidden()
        front = Call(request_id, key, app[TARGETS].default, endpoint, await read_body(request))
        run.call = front  # until a step's call takes over: a refusal below is recorded on it
        payload = screened_payload(front, request)
        serving = serve(request, run, endpoint, payload, started, request_id, key)
        streamed = payload.get("stream") is True  # a stream stops with its client: see forward
        response = await (serving if streamed else outliving_the_client(serving))
        outcome = (response.status, "")
    except ProxyError as error:
        outcome = (error.status, error.code)
        response = error.response(request_id)
    finally:
        call = run.call
        provider = call.target.provider if call is not None else OPENAI
        finish(app, request, provider, request_id, call, outcome, started)
    if not response.prepared:
        response.headers.update(run.headers())
    return response


async def serve(
    request: web.Request,
    run: RouteRun,
    endpoint: str,
    payload: dict[str, Any],
    started: float,
    request_id: str,
    key: Key,
) -> web.StreamResponse:
    app = request.app
    route = run.route
    deadline = started + request_timeout(request, app[SETTINGS].proxy_timeout)
    front = run.call
    assert front is not None  # handle_route's, until the first step's call takes over
    planned = plan_steps(
        route, app[TARGETS], key, endpoint, payload, request.headers, request_id, front.user
    )
    usable, run.reservation = reserved(planned, app)
    if not usable:
        raise next(p for p in planned if isinstance(p, ProxyError))
    # An answer with values a policy put back must not be kept in Redis, nor served to another.
    restoring = front.screening is not None and bool(front.screening.restore)
    cache = cache_key(route, payload) if route.cache_enabled and not restoring else None
    if cache is not None:
        run.cache_hit = False
        hit = await app[ROUTE_CACHE].lookup(cache)
        if hit is not None:
            return await serve_hit(request, run, usable[0], hit, payload)
    for each in usable:
        each.call.inherit(front)
    first = usable[0].call
    if has_limits(key) or limited_user(first.user) is not None:
        await admit_reserving(
            first, run.reservation, app[LIMITS], app[LOCAL_LIMITS], app[METRICS].redis_errors
        )
    for each in usable:
        each.call.admission = first.admission
    run.call = first
    collecting = cache is not None and first.stream
    response = await run_steps(request, run, planned, deadline, collecting)
    if cache is not None and 200 <= response.status < 300:
        await keep(app, cache, run, response)
    return response


def screened_payload(front: Call, request: web.Request) -> dict[str, Any]:
    """The body as the steps take it, after what the key (and its user) may call is checked and
    its policy has screened it: every step, and the cache key, see the redacted text."""
    app = request.app
    front.payload = json_object(front.body)
    model = front.payload.get("model")
    front.model = model if isinstance(model, str) else ""
    vet(front, request, app[USERS])
    screen(front, app[POLICIES])
    return json_object(front.body) if front.screening is not None else front.payload


def reserved(
    planned: list[StepCall | ProxyError], app: web.Application
) -> tuple[list[StepCall], int]:
    """The steps that can take the call, and the dearest one's reservation; a step the key
    cannot be charged for (a model without a price) becomes that refusal."""
    usable: list[StepCall] = []
    dearest = 0
    for index, step in enumerate(planned):
        if isinstance(step, ProxyError):
            continue
        try:
            dearest = max(dearest, reservation_nano(step.call, app[PRICING]))
        except ProxyError as error:
            planned[index] = error
            continue
        usable.append(step)
    return usable, dearest


def attempt_timeout(step: Step, remaining: float, stream: bool) -> aiohttp.ClientTimeout:
    """A step's timeout bounds each attempt; a stream's, each wait for upstream's next bytes."""
    each = min(step.timeout or remaining, remaining)
    if stream:
        return aiohttp.ClientTimeout(total=remaining, sock_connect=each, sock_read=each)
    return aiohttp.ClientTimeout(total=each)


def backoff(route: Route, step: Step, retry: int, retry_after: float | None) -> float | None:
    """Seconds before the step's next attempt, jittered between half and all of the interval
    (doubled per retry when exponential); upstream's Retry-After when longer, unless it is
    longer than the step's timeout: None, on to the next step."""
    interval = step.retry_interval * (2**retry if route.exponential_backoff else 1)
    delay = interval * (0.5 + random.random() / 2)
    if retry_after is None or retry_after <= delay:
        return delay
    if step.timeout is not None and retry_after > step.timeout:
        return None
    return retry_after


async def run_steps(
    request: web.Request,
    run: RouteRun,
    planned: list[StepCall | ProxyError],
    deadline: float,
    collecting: bool,
) -> web.StreamResponse:
    app = request.app
    route, cool_downs, settler = run.route, app[COOL_DOWNS], app[SETTLER]
    now = time.monotonic()
    order = [i for i in range(len(planned)) if not cool_downs.cooling(route, i, now)]
    last_failure: web.Response | ProxyError | None = None
    for index in order or range(len(planned)):  # all cooling down: try them all the same
        step, planned_step = route.steps[index], planned[index]
        if isinstance(planned_step, ProxyError):
            last_failure = last_failure or planned_step
            continue
        call, tried = planned_step.call, False
        for retry in range(step.retries + 1):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break  # not the step's failure: the call's time is up
            tried = True
            if run.unsent is not None:  # the previous attempt was not the last
                settler.submit(Settlement(call.key, 0, "", run.unsent))
                run.unsent = None
            run.attempts += 1
            run.step, run.call = index, call
            assert call.route is not None
            call.route.attempt = run.attempts
            timeout = attempt_timeout(step, remaining, call.stream)
            collector = run.collector = StreamCollector() if collecting else None
            try:
                response = await attempt(request, planned_step, timeout, run.headers(), collector)
            except AttemptFailed as failed:
                call.status, last_failure = failed.answer.status, failed.answer
                run.unsent = usage_event(call, 0, call.upstream_seconds)
                last = retry == step.retries or not failed.retry
                delay = None if last else backoff(route, step, retry, failed.retry_after)
                if delay is None or time.perf_counter() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
                continue
            cool_downs.succeeded(route, index)
            return response
        if tried:
            cool_downs.failed(route, index, time.monotonic())
    if isinstance(last_failure, ProxyError) or last_failure is None:
        raise last_failure or ProxyError(
            504, "the route's time ran out before any step answered", "upstream_error",
            "upstream_timeout",
        )  # fmt: skip
    run.unsent = None  # the last attempt's event is the call's own
    return last_failure


async def serve_hit(
    request: web.Request,
    run: RouteRun,
    first: StepCall,
    hit: CachedAnswer,
    payload: dict[str, Any],
) -> web.Response:
    """The cached answer in the request's own form; it costs nothing, but counts as a request."""
    app = request.app
    call, front = first.call, run.call
    assert front is not None
    call.inherit(front)
    run.cache_hit, run.step = True, hit.step
    if has_limits(call.key) or limited_user(call.user) is not None:
        await admit_reserving(call, 0, app[LIMITS], app[LOCAL_LIMITS], app[METRICS].redis_errors)
    run.call = call  # admitted: recorded, as a refused call is not
    mark = call.route
    assert mark is not None
    mark.step, mark.cache_hit, mark.saved_cost_nano = hit.step, True, hit.cost_nano
    call.payload = None  # nothing metered: a hit is never charged
    call.status = 200
    headers = CIMultiDict({"X-Request-Id": call.request_id})
    add_rate_limit_headers(call, headers)
    if call.stream:
        call.streamed = True
        body = hit.as_sse(include_usage=wants_usage(payload))
        return web.Response(body=body, headers=headers, content_type="text/event-stream")
    return web.Response(body=hit.body, headers=headers, content_type="application/json")


async def keep(
    app: web.Application,
    cache: str,
    run: RouteRun,
    response: web.StreamResponse,
) -> None:
    """Keep a complete 2xx answer, with the step that served it and what it cost."""
    call = run.call
    assert call is not None
    if run.collector is not None:
        answer = run.collector.answer()
    elif isinstance(response, web.Response) and isinstance(response.body, bytes):
        answer = CachedAnswer.from_json(response.status, response.body)
    else:
        answer = None
    if answer is None:
        return
    cost = cost_usd(call, app[PRICING]) if call.payload is not None else None
    kept = answer.served_by(run.step, to_nano(cost) if cost else 0)
    await app[ROUTE_CACHE].store(cache, kept, run.route.cache_ttl)
