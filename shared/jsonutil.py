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


# Postgres's jsonb gives a number back in its plain digits (1e20 as 100000000000000000000), which
# past 64 bits is an integer no answer can be encoded with.
JSONB_NUMBER_LIMIT = 2**63


def number_past_jsonb(value: Any) -> int | float | None:
    """The first number in a JSON value that jsonb would give back past 64 bits, if any."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if abs(value) >= JSONB_NUMBER_LIMIT else None
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        found = number_past_jsonb(child)
        if found is not None:
            return found
    return None
