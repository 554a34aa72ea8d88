"""The change feed: keymgmt announces each committed write on one Postgres channel, proxies listen.

A payload names the object, never its content: a listener reloads the object from Postgres.
`{"kind": "key", "id": "<uuid>", "version": <updated_at>, "at": <committed_at>}` (kind: one of the
names below), times as epoch seconds from Postgres's clock, about 110 bytes (Postgres refuses
payloads of 8,000 and more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

CHANNEL = "gateway_changes"
KEY = "key"
SETTING = "setting"
ROUTE = "route"
POLICY = "policy"
USER = "user"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    object_id: str
    version: float  # the object's updated_at
    committed_at: float  # Postgres's clock as the transaction ends


def parse_change(payload: str) -> Change | None:
    """The change a payload announces, or None when it is not one of ours."""
    try:
        fields = orjson.loads(payload)
        change = Change(fields["kind"], fields["id"], fields["version"], fields["at"])
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    texts_ok = all(isinstance(text, str) and text for text in (change.kind, change.object_id))
    times = (change.version, change.committed_at)
    times_ok = all(type(t) in (int, float) and math.isfinite(t) for t in times)
    return change if texts_ok and times_ok else None
