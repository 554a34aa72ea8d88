"""Named top-level members of any JSON object, scanned like a full parse would read them."""

from __future__ import annotations

import json
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import jsonscan
from proxy.jsonscan import members
from proxy.metering import Usage, usage_of_body


def top_level(body: bytes, names: tuple[str, ...]) -> dict[str, object]:
    """Just the named members of what `members` finds: a small body yields its whole object."""
    found = members(body, names)
    return {name: found[name] for name in names if name in found}


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["usage", "model", "x", '"{', "\\"]) | st.text(), children
        )
    ),
    max_leaves=20,
)
NAMES = ("usage", "model", "data")
ENCODINGS = st.sampled_from(
    [
        {},
        {"indent": 2},
        {"separators": (" , ", " :\t")},
        {"ensure_ascii": False},
        {"indent": "\r\n "},
    ]
)


@given(st.dictionaries(st.sampled_from(NAMES) | st.text(), JSON_VALUES), ENCODINGS)
def test_members_scans_any_json_object_like_a_full_parse(
    payload: dict[str, object], encoding: dict[str, object]
) -> None:
    body = json.dumps(payload, **encoding).encode()  # type: ignore[arg-type]
    expected = {name: payload[name] for name in NAMES if name in payload}
    with patch.object(jsonscan, "FULL_PARSE_LIMIT", 0):  # scan even a small body
        assert top_level(body, NAMES) == expected
    assert top_level(body, NAMES) == expected


@pytest.mark.parametrize("limit", [0, 1 << 20], ids=["scanned", "parsed"])
def test_members_are_not_fooled_by_nested_or_quoted_names(limit: int) -> None:
    body = (
        b' {"data": [{"usage": {"prompt_tokens": 9}}], "note": "\\"usage\\": {\\"x\\": 1}} {[",'
        b' "meta": {"model": "inner", "usage": 1}, "us\\u0061ge" :{"prompt_tokens": 2} ,'
        b' "model":"outer"}\n'
    )
    with patch.object(jsonscan, "FULL_PARSE_LIMIT", limit):
        assert top_level(body, ("usage", "model")) == {
            "usage": {"prompt_tokens": 2},
            "model": "outer",
        }
        assert usage_of_body(body) == (Usage(2, 0, 0), "outer")
        assert top_level(b'{"data": {"usage": {"prompt_tokens": 9}}}', ("usage",)) == {}
        for garbage in (b"", b"[1]", b'"usage"', b'{"usage": ', b'{"a" 1}', b"{,}", b"nul"):
            assert top_level(garbage, ("usage",)) == {}
