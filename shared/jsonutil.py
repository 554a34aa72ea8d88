"""JSON responses and request bodies with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def positive_int(value: Any) -> int:
    """A JSON value that should be a count: itself when a whole number above 0, else 0."""
    return value if type(value) is int and value > 0 else 0  # True is a bool, not an int, here


def loads_object(body: bytes) -> dict[str, Any] | None:
    """`body` parsed, when it is a JSON object; None for anything else."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
