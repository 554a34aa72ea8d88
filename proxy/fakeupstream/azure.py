"""Azure OpenAI's URL layouts: `/openai/deployments/{deployment}/<endpoint>?api-version=...`
and the v1 API, `/openai/v1/<endpoint>` (the body's `model` names the deployment).

- The key comes in `api-key` (the v1 API also takes it as `Authorization: Bearer`): 401 without.
- The deployment layout needs `api-version` (400 MissingApiVersionParameter without); the v1
  API takes none.
- `stream_options` is refused (400 "Unrecognized request argument") on an api-version dated
  before 2024-08-01: Azure accepts it from 2024-08-01-preview on, and in the GA 2024-10-21 (the
  GA 2024-06-01 refuses it).
- A deployment named after a model the fake knows serves that model; any other deployment
  serves the endpoint's usual model (gpt-4o-mini, gpt-3.5-turbo-instruct,
  text-embedding-3-small). Answers name the model served, never the deployment, as Azure does.
- Chat and completions carry Azure's content-filter results: `prompt_filter_results` (in a
  stream, a first chunk with empty `choices`) and each choice's `content_filter_results`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.fakeupstream.completions import answer_chat, answer_completion
from proxy.fakeupstream.resources import answer_embeddings
from proxy.fakeupstream.state import JSON, MODELS, FakeAPIError
from proxy.fakeupstream.wire import bearer_token, read_json

STREAM_OPTIONS_SINCE = "2024-08-01"
_API_VERSION = re.compile(r"(\d{4}-\d{2}-\d{2})(-preview)?|preview|latest")
_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide"
    " a valid key for an active subscription and use a correct regional API endpoint for your"
    " resource."
)

Answer = Callable[[web.Request, JSON], Awaitable[web.StreamResponse]]


async def _chat(request: web.Request, body: JSON) -> web.StreamResponse:
    return await answer_chat(request, body, filters=True)


async def _completion(request: web.Request, body: JSON) -> web.StreamResponse:
    return await answer_completion(request, body, filters=True)


async def _embeddings(request: web.Request, body: JSON) -> web.StreamResponse:
    return answer_embeddings(request, body)


# endpoint → (answer, the model a deployment not named after one serves)
ENDPOINTS: dict[str, tuple[Answer, str]] = {
    "chat/completions": (_chat, "gpt-4o-mini"),
    "completions": (_completion, "gpt-3.5-turbo-instruct"),
    "embeddings": (_embeddings, "text-embedding-3-small"),
}


def is_azure(request: web.Request) -> bool:
    return request.path.startswith("/openai/")


def served_model(deployment: str, endpoint: str) -> str:
    return deployment if deployment in MODELS else ENDPOINTS[endpoint][1]


def _check_key(request: web.Request, bearer_too: bool) -> None:
    if not request.headers.get("api-key") and not (bearer_too and bearer_token(request)):
        raise FakeAPIError(401, _DENIED, "401")


def _check_api_version(api_version: str | None, body: JSON) -> None:
    if api_version is None:
        return
    match = _API_VERSION.fullmatch(api_version)
    if match is None:
        raise FakeAPIError(404, "Resource not found", "404")
    dated = match.group(1)
    if "stream_options" in body and dated is not None and dated < STREAM_OPTIONS_SINCE:
        raise FakeAPIError(
            400, "Unrecognized request argument supplied: stream_options", None, None
        )


async def _serve(
    request: web.Request, endpoint: str, deployment: str | None, api_version: str | None
) -> web.StreamResponse:
    body = await read_json(request)
    _check_api_version(api_version, body)
    if deployment is None:  # the v1 API: the body names the deployment
        deployment = body.get("model")
        if not isinstance(deployment, str) or not deployment:
            raise FakeAPIError(400, "model is required", "missing_required_parameter", "model")
    answer, _ = ENDPOINTS[endpoint]
    return await answer(request, {**body, "model": served_model(deployment, endpoint)})


def _deployment_handler(endpoint: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        _check_key(request, bearer_too=False)
        api_version = request.query.get("api-version")
        if not api_version:
            raise FakeAPIError(
                400,
                "The api-version query parameter (?api-version=) is required for all requests.",
                "MissingApiVersionParameter",
            )
        return await _serve(request, endpoint, request.match_info["deployment"], api_version)

    return handler


def _v1_handler(endpoint: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        _check_key(request, bearer_too=True)
        return await _serve(request, endpoint, None, request.query.get("api-version"))

    return handler


def add_routes(app: web.Application) -> None:
    for endpoint in ENDPOINTS:
        app.router.add_post(
            f"/openai/deployments/{{deployment}}/{endpoint}", _deployment_handler(endpoint)
        )
        app.router.add_post(f"/openai/v1/{endpoint}", _v1_handler(endpoint))
