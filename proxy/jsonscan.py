"""The top-level members of a JSON object answer, found without building the rest of it.

An embeddings answer of 2,048 float vectors is about 8 MB of text and over 100 MB as Python
objects; metering needs only its `usage` and `model`. A body over FULL_PARSE_LIMIT is scanned:
each member's value is delimited (strings whole, arrays of numbers in one step), and only the
named ones are parsed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.jsonutil import loads_object

FULL_PARSE_LIMIT = 64 * 1024  # a JSON answer up to this size is parsed whole: that is quicker

_SPACE = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR = re.compile(rb"[-+.0-9eE]+|true|false|null")
# Inside a container: a whole string (so that its brackets do not count), a whole array of
# numbers only (an embedding: skipped in one step, not number by number), or a bracket.
_NESTED = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|\[[-+.0-9eE,\s]*\]|[\[\]{}]', re.DOTALL)
_OPENERS = b"[{"


def members(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """At least the named top-level members of a JSON object (a small body's whole object, as
    that is quicker); {} for anything that is not one. Callers look their names up in it.

    A large body is scanned rather than parsed: only the named members' values are built, so
    that the float vectors of an embeddings answer never become Python objects. Skipped values
    are delimited, not validated.
    """
    if len(body) <= FULL_PARSE_LIMIT:
        return loads_object(body) or {}
    try:
        return _scan_members(body, names)
    except (ValueError, IndexError):  # not an object (orjson's error is a ValueError too)
        return {}


def _scan_members(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    at = _skip_space(body, 0)
    _expect(body, at, b"{")
    at = _skip_space(body, at + 1)
    if body[at : at + 1] == b"}":
        return found if _skip_space(body, at + 1) == len(body) else {}
    while True:
        key_end = _end_of(_STRING, body, at)
        key = orjson.loads(body[at:key_end])
        at = _skip_space(body, key_end)
        _expect(body, at, b":")
        at = _skip_space(body, at + 1)
        end = _value_end(body, at)
        if key in names:
            found[key] = orjson.loads(body[at:end])
        at = _skip_space(body, end)
        if body[at : at + 1] == b"}":
            return found if _skip_space(body, at + 1) == len(body) else {}
        _expect(body, at, b",")
        at = _skip_space(body, at + 1)


def _end_of(pattern: re.Pattern[bytes], body: bytes, at: int) -> int:
    match = pattern.match(body, at)
    if match is None:
        raise ValueError(f"unexpected byte at {at}")
    return match.end()


def _skip_space(body: bytes, at: int) -> int:
    return _end_of(_SPACE, body, at)


def _expect(body: bytes, at: int, token: bytes) -> None:
    if body[at : at + 1] != token:
        raise ValueError(f"expected {token!r} at {at}")


def _value_end(body: bytes, at: int) -> int:
    first = body[at]
    if first == 0x22:  # "
        return _end_of(_STRING, body, at)
    if first in _OPENERS:
        depth = 0
        for token in _NESTED.finditer(body, at):
            start, end = token.span()
            if end - start > 1:  # a string or an array of numbers, whole
                if not depth:
                    return end  # the value itself is an array of numbers
            elif body[start] in _OPENERS:
                depth += 1
            else:
                depth -= 1
                if not depth:
                    return end
        raise ValueError("unterminated value")
    return _end_of(_SCALAR, body, at)
