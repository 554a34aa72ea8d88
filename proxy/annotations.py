"""What a client attaches to its call's event: `X-CUSTOM-EVENT-ID` (the event's customId) and
`X-METADATA` (a JSON object of at most 4 KB, the event's metadata). Read before admission: a bad
one is a 400 and costs nothing."""

from __future__ import annotations

import orjson
from multidict import CIMultiDictProxy

from proxy.calls import Call
from proxy.errors import invalid_request
from shared.jsonutil import number_past_jsonb

MAX_METADATA_BYTES = 4096
MAX_CUSTOM_ID = 256


def read_annotations(call: Call, headers: CIMultiDictProxy[str]) -> None:
    custom_id = headers.get("X-CUSTOM-EVENT-ID")
    if custom_id is not None:
        if len(custom_id) > MAX_CUSTOM_ID or "\x00" in custom_id:
            raise invalid_request(
                f"X-CUSTOM-EVENT-ID must be at most {MAX_CUSTOM_ID} characters",
                "invalid_custom_event_id",
            )
        call.custom_id = custom_id
    metadata = headers.get("X-METADATA")
    if metadata is not None:
        call.metadata = metadata_of(metadata)


def metadata_of(header: str) -> bytes:
    """The header's JSON object, as compact JSON to embed in the event as it is."""
    raw = header.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_METADATA_BYTES:
        raise invalid_request(f"X-METADATA is over {MAX_METADATA_BYTES} bytes", "invalid_metadata")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("X-METADATA is not valid JSON", "invalid_metadata") from None
    if not isinstance(value, dict):
        raise invalid_request("X-METADATA must be a JSON object", "invalid_metadata")
    if number_past_jsonb(value) is not None:
        raise invalid_request(
            "X-METADATA's numbers must be below 2**63 in magnitude", "invalid_metadata"
        )
    try:
        # Postgres's jsonb takes no NUL in text: refused here rather than parked by keymgmt.
        compact = orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise invalid_request("X-METADATA is nested too deeply", "invalid_metadata") from None
    if b"\\u0000" in compact:
        raise invalid_request("X-METADATA must not contain NUL characters", "invalid_metadata")
    return compact
