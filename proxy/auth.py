"""Stage 1, authenticate: the presented key, looked up in the snapshot, checked in memory."""

from __future__ import annotations

import time

from aiohttp import web

from proxy.errors import invalid_api_key
from proxy.snapshot import KeySnapshot
from shared.models import Key, hash_key

# One message for every refusal: it names each cause, a key made a moment ago among them.
UNKNOWN_KEY = (
    "invalid, revoked or expired API key (or one created less than a second ago, which this"
    " proxy has not received yet: try again)"
)


def presented_key(request: web.Request) -> str | None:
    headers = request.headers
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("api-key") or headers.get("x-api-key") or None


def authenticate(request: web.Request, snapshot: KeySnapshot) -> Key:
    raw = presented_key(request)
    if raw is None:
        raise invalid_api_key("no API key: send it as Authorization: Bearer <key>")
    key = snapshot.get(hash_key(raw))
    # The same answer for every cause, so that a caller cannot probe which keys exist.
    if key is None or key.revoked or key.expired(time.time()):
        raise invalid_api_key(UNKNOWN_KEY)
    return key
