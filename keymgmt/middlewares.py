"""Edge middlewares: admin authentication, and every error turned into one JSON shape."""

from __future__ import annotations

import hashlib
import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from keymgmt.errors import ApiError, Unauthorized
from shared.jsonutil import json_response

log = logging.getLogger("gateway.keymgmt")

OPEN_PATHS = frozenset({"/api/health", "/metrics", "/ui"})
# The console's static files: its pages send the pass with every API call they make.
OPEN_PREFIX = "/ui/"


def problem(
    request: web.Request, status: int, title: str, kind: str, detail: object
) -> web.Response:
    body = {
        "status": status,
        "title": title,
        "type": kind,
        "detail": detail,
        "instance": request.path,
    }
    return json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return problem(request, error.status, error.title, error.type, error.detail)
    except web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        detail = f"{request.method} is not allowed on {request.path}; it takes {allowed}"
        if request.method == "POST" and "PUT" in error.allowed_methods:
            detail += " (create with PUT)"
        response = problem(request, 405, error.reason, "method_not_allowed", detail)
        response.headers["Allow"] = error.headers["Allow"]
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return problem(request, error.status, error.reason, _http_type(error.status), error.text)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return problem(request, 500, "Internal Server Error", "internal_error", "unexpected error")


def _http_type(status: int) -> str:
    return {
        404: "not_found",
        413: "payload_too_large",
    }.get(status, "invalid_request" if status < 500 else "internal_error")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def admin_middleware(admin_pass: str) -> web.middleware:  # type: ignore[valid-type]
    expected = _digest(admin_pass)

    @web.middleware
    async def check_admin_pass(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not request.path.startswith(OPEN_PREFIX):
            presented = request.headers.get("X-API-KEY")
            if presented is None:
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                presented = token.strip() if scheme.lower() == "bearer" else ""
            # Digests of equal length, compared in constant time, leak neither content nor length.
            if not hmac.compare_digest(_digest(presented), expected):
                raise Unauthorized(
                    "missing or wrong admin pass (X-API-KEY or Authorization: Bearer)"
                )
        return await handler(request)

    return check_admin_pass
