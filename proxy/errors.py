"""Errors the proxy makes itself, in the shape of the provider a path serves (OpenAI's unless
an adapter says otherwise), so that each vendor's SDK raises the right type."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shared.jsonutil import json_response


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = headers

    def response(self, request_id: str, shape: ErrorShape | None = None) -> web.Response:
        body = (shape or openai_shape)(self)
        headers = {"X-Request-Id": request_id}
        if self.headers:
            headers.update(self.headers)
        return json_response(body, status=self.status, headers=headers)


ErrorShape = Callable[[ProxyError], dict[str, Any]]


def openai_shape(error: ProxyError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": None,
            "code": error.code,
        }
    }


# Anthropic's error types by status (docs.anthropic.com, "Errors").
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_shape(error: ProxyError) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`, the type from the status."""
    fallback = "api_error" if error.status >= 500 else "invalid_request_error"
    error_type = ANTHROPIC_ERROR_TYPES.get(error.status, fallback)
    return {"type": "error", "error": {"type": error_type, "message": error.message}}


def invalid_api_key(message: str) -> ProxyError:
    return ProxyError(401, message, "invalid_request_error", "invalid_api_key")


def invalid_json(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", "invalid_json")


def invalid_request(message: str, code: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code)


def invalid_path(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", "invalid_path")


def request_too_large(limit: int) -> ProxyError:
    return ProxyError(
        413, f"request body over {limit} bytes", "invalid_request_error", "request_too_large"
    )


def upstream_unreachable(detail: str) -> ProxyError:
    return ProxyError(
        502, f"upstream unreachable: {detail}", "upstream_error", "upstream_unreachable"
    )


def upstream_auth_failed(status: int) -> ProxyError:
    # Upstream's own body names the gateway's key, masked: the client gets none of it.
    return ProxyError(
        502,
        f"the upstream refused the gateway's credential (HTTP {status}): for its operator to fix",
        "upstream_error",
        "upstream_auth_failed",
    )


def upstream_timeout(seconds: float) -> ProxyError:
    return ProxyError(
        504, f"upstream timed out after {seconds:g}s", "upstream_error", "upstream_timeout"
    )


def not_found(path: str, hint: str = "") -> ProxyError:
    message = f"no route for {path}" + (f": {hint}" if hint else "")
    return ProxyError(404, message, "invalid_request_error", "unknown_url")


def limits_unavailable() -> ProxyError:
    return ProxyError(
        503,
        "the limit store is unavailable; try again shortly",
        "server_error",
        "limits_unavailable",
    )


def rate_limited(limit: int, unit: str, retry_after: float, holder: str = "key") -> ProxyError:
    return ProxyError(
        429,
        f"rate limit of {limit} requests per {unit} reached for this {holder}",
        "requests",
        "rate_limit_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def budget_spent(limit_usd: float, holder: str = "key") -> ProxyError:
    return ProxyError(
        429,
        f"this {holder}'s cost limit of {limit_usd:g} USD is spent",
        "insufficient_quota",
        "insufficient_quota",
        headers={"x-should-retry": "false"},
    )


def budget_reserved(
    limit_usd: float, unit: str, retry_after: float, holder: str = "key"
) -> ProxyError:
    """Refused because requests in flight hold the rest of the budget: retry once they end."""
    per_unit = f" per {unit}" if unit else ""
    return ProxyError(
        429,
        f"this {holder}'s cost limit of {limit_usd:g} USD{per_unit} is held by requests in flight",
        "insufficient_quota",
        "insufficient_quota",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def window_budget_spent(
    limit_usd: float, unit: str, retry_after: float, holder: str = "key"
) -> ProxyError:
    return ProxyError(
        429,
        f"this {holder}'s cost limit of {limit_usd:g} USD per {unit} is reached",
        "insufficient_quota",
        "insufficient_quota",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def endpoint_not_metered(endpoint: str, reason: str) -> ProxyError:
    return ProxyError(
        403,
        f"{endpoint}: {reason}, so it is refused for a key with a cost limit",
        "invalid_request_error",
        "endpoint_not_metered",
    )


def model_not_priced(model: str) -> ProxyError:
    return ProxyError(
        400,
        f"no price is known for model {model!r}, so it is refused for a key with a cost limit",
        "invalid_request_error",
        "model_not_priced",
    )


def no_provider_setting(provider: str, setting_name: str = "") -> ProxyError:
    named = f" named {setting_name!r}" if setting_name else ""
    return ProxyError(
        403,
        f"this key has no {provider} provider setting{named}: give it one (settingIds)",
        "permission_error",
        "no_provider_setting",
    )


def model_not_allowed(model: str, setting_name: str) -> ProxyError:
    return ProxyError(
        403,
        f"model {model!r} is not among the allowedModels of provider setting {setting_name!r}",
        "permission_error",
        "model_not_allowed",
    )


def not_allowed(message: str, code: str) -> ProxyError:
    """A call outside what the key (or its user) may call: a permission error in every shape."""
    return ProxyError(403, message, "invalid_request_error", code)
