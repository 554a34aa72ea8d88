"""The proxy's own errors in each provider's shape, as the vendor's SDK reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy import errors
from proxy.errors import ProxyError, anthropic_shape

ServerFactory = Callable[..., Awaitable[TestServer]]

CASES = [
    (errors.invalid_api_key("no such key"), anthropic.AuthenticationError, "authentication_error"),
    (errors.endpoint_not_metered("x", "y"), anthropic.PermissionDeniedError, "permission_error"),
    (errors.rate_limited(1, "m", 30), anthropic.RateLimitError, "rate_limit_error"),
    (errors.budget_spent(1.0), anthropic.RateLimitError, "rate_limit_error"),
    (errors.invalid_json("bad"), anthropic.BadRequestError, "invalid_request_error"),
    (errors.model_not_priced("m"), anthropic.BadRequestError, "invalid_request_error"),
    (errors.not_found("/nope"), anthropic.NotFoundError, "not_found_error"),
    (errors.request_too_large(10), anthropic.ContentTooLargeError, "request_too_large"),
    (errors.upstream_unreachable("E"), anthropic.InternalServerError, "api_error"),
    (errors.upstream_timeout(5), anthropic.InternalServerError, "api_error"),
    (errors.limits_unavailable(), anthropic.InternalServerError, "api_error"),
]


@pytest.fixture
async def client(aiohttp_server: ServerFactory) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async def handler(request: web.Request) -> web.Response:
        error = CASES[int(request.query["case"])][0]
        return error.response("req-1", shape=anthropic_shape)

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    server = await aiohttp_server(app)
    async with anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{server.port}", api_key="k", max_retries=0
    ) as sdk:
        yield sdk


@pytest.mark.parametrize(
    ("case", "error_class", "error_type"),
    [(index, error_class, error_type) for index, (_, error_class, error_type) in enumerate(CASES)],
)
async def test_the_anthropic_sdk_raises_the_matching_error(
    client: anthropic.AsyncAnthropic,
    case: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    with pytest.raises(error_class) as raised:
        await client.messages.create(
            model="m", max_tokens=1, messages=[], extra_query={"case": str(case)}
        )
    error = CASES[case][0]
    assert raised.value.status_code == error.status
    assert raised.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": error.message},
    }


def test_headers_come_along_in_every_shape() -> None:
    response = errors.rate_limited(1, "m", 2.5).response("req-1", shape=anthropic_shape)
    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-Request-Id"] == "req-1"


def test_the_openai_shape_is_the_default_and_unchanged() -> None:
    error = ProxyError(429, "slow down", "requests", "rate_limit_exceeded")
    body: Any = orjson.loads(error.response("r").body)  # type: ignore[arg-type]
    assert body == {
        "error": {
            "message": "slow down",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
