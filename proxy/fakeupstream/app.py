"""Middleware, the headers of every answer, the app factory and the command line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.fakeupstream import anthropic, azure
from proxy.fakeupstream.completions import (
    chat_completions,
    completions,
)
from proxy.fakeupstream.jobs import add_job_routes
from proxy.fakeupstream.resources import (
    audio_speech,
    audio_transcriptions,
    embeddings,
    file_content,
    images,
    list_models,
    moderations,
    retrieve_file,
    retrieve_model,
    unknown_route,
    upload_file,
)
from proxy.fakeupstream.state import (
    FAKE_UPSTREAM,
    FakeAnthropicError,
    FakeAPIError,
    FakeOptions,
    FakeUpstream,
    RecordedRequest,
)
from proxy.fakeupstream.wire import (
    anthropic_error_body,
    error_payload,
    failure_body,
    json_response,
    refused_key_body,
)

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
    status = options.fail_next.pop(0) if options.fail_next else options.fail_status
    if status is not None:
        asked = {"Retry-After": options.retry_after} if options.retry_after else None
        if anthropic.is_anthropic(request):
            body = anthropic_error_body(status, f"Fake upstream failure: {status}")
        elif status == 401:
            body = refused_key_body(request.headers.get("Authorization", ""))
        else:
            body = failure_body(status)
        return web.Response(
            status=status, body=body, headers=asked, content_type="application/json"
        )
    try:
        return await handler(request)
    except FakeAPIError as error:
        return json_response(
            error_payload(error.status, error.message, error.code, error.param), error.status
        )
    except FakeAnthropicError as error:
        return web.Response(
            status=error.status,
            body=anthropic_error_body(error.status, error.message),
            headers=error.headers,
            content_type="application/json",
        )


async def _api_headers(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[FAKE_UPSTREAM]
    headers = response.headers
    if anthropic.is_anthropic(request):
        headers["request-id"] = state.new_id("req_")
        headers["anthropic-ratelimit-requests-limit"] = "4000"
        headers["anthropic-ratelimit-requests-remaining"] = "3999"
        return
    headers["x-request-id"] = state.new_id("req_")
    if azure.is_azure(request):
        headers["apim-request-id"] = state.new_id("")
        headers["x-ms-region"] = "East US"
    headers["openai-processing-ms"] = str(int(state.options.latency * 1000))
    headers["openai-version"] = "2020-10-01"
    headers["openai-organization"] = "org-fake"
    headers["openai-project"] = "proj_fake"
    headers["x-ratelimit-limit-requests"] = "10000"
    headers["x-ratelimit-remaining-requests"] = "9999"
    headers["x-ratelimit-limit-tokens"] = "30000000"


def _by_dialect(openai_handler: Handler, anthropic_handler: Handler) -> Handler:
    """A path both APIs have: Anthropic's SDK always sends anthropic-version."""

    async def handler(request: web.Request) -> web.StreamResponse:
        chosen = anthropic_handler if anthropic.is_anthropic(request) else openai_handler
        return await chosen(request)

    return handler


def create_fake_upstream(options: FakeOptions | None = None) -> web.Application:
    # Room for file and audio uploads (aiohttp's default limit is 1 MiB).
    app = web.Application(middlewares=[fake_middleware], client_max_size=64 * 1024**2)
    app[FAKE_UPSTREAM] = FakeUpstream(options or FakeOptions())
    app.on_response_prepare.append(_api_headers)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    add_job_routes(app)  # responses (background ones become jobs), batches, fine-tuning
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/moderations", moderations)
    for kind in ("generations", "edits", "variations"):
        app.router.add_post(f"/v1/images/{kind}", images)
    app.router.add_post("/v1/audio/speech", audio_speech)
    app.router.add_post("/v1/audio/transcriptions", audio_transcriptions)
    app.router.add_post("/v1/audio/translations", audio_transcriptions)
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files/{file_id}", retrieve_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_get("/v1/models", _by_dialect(list_models, anthropic.list_models))
    app.router.add_get(
        "/v1/models/{model_id}", _by_dialect(retrieve_model, anthropic.retrieve_model)
    )
    app.router.add_post("/v1/messages", anthropic.messages)
    app.router.add_post("/v1/messages/count_tokens", anthropic.count_tokens)
    azure.add_routes(app)
    # Last, so that it only takes what nothing above matched (including a wrong method).
    app.router.add_route("*", "/{tail:.*}", unknown_route)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fake OpenAI, Anthropic and Azure OpenAI APIs for tests, demos and benchmarks"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--stream-interval", type=float, default=0.0, help="seconds between events")
    args = parser.parse_args(argv)
    options = FakeOptions(latency=args.latency, stream_interval=args.stream_interval)
    web.run_app(
        create_fake_upstream(options), host=args.host, port=args.port, access_log=None, print=None
    )
