"""Resolve target for each step of a route: the step's provider, setting and model, its body
(the client's, with the step's requestParams and model), and the Call that carries it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from proxy.access import check_model
from proxy.calls import Call, RouteMark, read_payload
from proxy.errors import ProxyError, invalid_json
from proxy.providers import ADAPTERS_BY_NAME
from proxy.routes.formats import FORMATS, OPENAI_FORMAT, Format
from proxy.routes.model import Route
from proxy.targets import Targets, require_model_allowed
from proxy.translate.anthropic_request import wants_usage
from proxy.upstream import gateway_headers, upstream_headers
from shared.models import Key, User


@dataclass(slots=True)
class StepCall:
    """A step made ready for its attempts."""

    call: Call
    format: Format
    headers: dict[str, str]  # what goes upstream
    include_usage: bool  # the client asked for a stream's usage chunk


def plan_step(
    route: Route,
    index: int,
    targets: Targets,
    key: Key,
    endpoint: str,
    payload: dict[str, Any],
    client_headers: CIMultiDictProxy[str],
    request_id: str,
    user: User | None = None,
) -> StepCall:
    """The step's call; a ProxyError when the key cannot take it (no setting, model not allowed
    by the setting, the key or the call's user, a body the step's format cannot carry)."""
    step = route.steps[index]
    provider = ADAPTERS_BY_NAME[step.provider]  # keymgmt stores known providers only
    target = targets.of_step(provider, key, step.setting_id)
    require_model_allowed(target, step.model)
    check_model(key, "key", step.model)  # the step's model is the one called, not the body's
    if user is not None:
        check_model(user, "user", step.model)
    step_format = FORMATS.get(provider.wire_format, OPENAI_FORMAT)
    tail, query = provider.step_path(target, step_format.tail(endpoint), step.model, step.params)
    billed, upstream_path = provider.endpoint(tail)
    body = step_format.payload({**payload, **step.request_params, "model": step.model}, step.model)
    try:
        encoded = orjson.dumps(body)
    except orjson.JSONEncodeError:  # nested deeper than any API request is
        raise invalid_json("the request body is nested too deeply") from None
    call = Call(
        request_id,
        key,
        target,
        billed,
        encoded,
        upstream_path=upstream_path,
        upstream_query=query,
        route=RouteMark(route.route_id, index),
    )
    read_payload(call, body)
    headers = upstream_headers(client_headers, target, request_id)
    headers.update(step_format.headers)
    headers.update(gateway_headers(target, request_id))  # last: nothing replaces them
    return StepCall(call, step_format, headers, wants_usage(payload))


def plan_steps(
    route: Route,
    targets: Targets,
    key: Key,
    endpoint: str,
    payload: dict[str, Any],
    client_headers: CIMultiDictProxy[str],
    request_id: str,
    user: User | None = None,
) -> list[StepCall | ProxyError]:
    """Every step's call, or why the key cannot take that step (answered if it is reached)."""
    planned: list[StepCall | ProxyError] = []
    for index in range(len(route.steps)):
        try:
            planned.append(
                plan_step(
                    route, index, targets, key, endpoint, payload, client_headers, request_id, user
                )
            )
        except ProxyError as error:
            planned.append(error)
    return planned
