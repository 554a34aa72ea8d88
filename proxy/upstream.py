"""The upstream side: one shared ClientSession, and which headers cross the proxy each way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from shared.config import Settings

if TYPE_CHECKING:
    from proxy.providers.base import Target
from shared.logs import Throttle

# Client headers that reach upstream; everything else (the client's key, cookies, hop-by-hop,
# forwarding headers) stays at the proxy.
FORWARDED_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "user-agent", "openai-beta", "idempotency-key"}
)
FORWARDED_REQUEST_PREFIXES = ("x-stainless-",)

# Upstream headers that describe the upstream connection or body encoding rather than the answer.
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "set-cookie",
        "server",
        "date",
        "x-request-id",
        # The upstream organisation's identity: a key holder has no business knowing it.
        "openai-organization",
        "openai-project",
    }
)
# The organisation's account limits; the proxy sends the key's own request limit instead.
DROPPED_RESPONSE_PREFIXES = ("x-ratelimit-",)
PLAIN_CONNECTION_VALUES = frozenset({"keep-alive", "close"})
NO_OPTIONS: frozenset[str] = frozenset()
# Header names remembered a direction; past that (a peer sending made-up names), decided anew.
NAMES_REMEMBERED = 1024
# Upstream statuses that mean the gateway's own credential was refused.
CREDENTIAL_REFUSED = frozenset({401, 403})
log = logging.getLogger("gateway.proxy")


def create_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.proxy_timeout),
        auto_decompress=True,
        read_bufsize=2**16,
    )


class NamesPassing:
    """Which header names cross the proxy, decided once per spelling: the same few names come
    with every call, and deciding again costs a `lower()` and three lookups a header. Callers
    read `decided` inline, as `decided.get(name)` then `decide(name)`: a call a header would
    cost as much as the lookups it saves."""

    def __init__(self, passes: Callable[[str], bool]) -> None:
        self._passes = passes
        self.decided: dict[str, bool] = {}

    def decide(self, name: str) -> bool:
        passes = self._passes(name.lower())
        if len(self.decided) < NAMES_REMEMBERED:
            self.decided[name] = passes
        return passes


def _forwarded(extra: frozenset[str]) -> Callable[[str], bool]:
    return lambda lowered: (
        lowered in FORWARDED_REQUEST_HEADERS
        or lowered.startswith(FORWARDED_REQUEST_PREFIXES)
        or lowered in extra
    )


@cache  # one a provider: its extra headers are fixed
def forwarded_names(extra: frozenset[str]) -> NamesPassing:
    return NamesPassing(_forwarded(extra))


def _answered(lowered: str) -> bool:
    return lowered not in DROPPED_RESPONSE_HEADERS and not lowered.startswith(
        DROPPED_RESPONSE_PREFIXES
    )


ANSWERED_NAMES = NamesPassing(_answered)


def upstream_headers(
    client_headers: CIMultiDictProxy[str], target: Target, request_id: str
) -> dict[str, str]:
    names = forwarded_names(target.provider.forwarded_headers)
    decided = names.decided
    headers = {
        name: value
        for name, value in client_headers.items()
        if ((passes := decided.get(name)) is None and names.decide(name)) or passes
    }
    hop_by_hop = connection_options(client_headers)
    if hop_by_hop:
        headers = {name: value for name, value in headers.items() if name.lower() not in hop_by_hop}
    # Set last, so that nothing the client sends or names in Connection replaces them.
    headers.update(gateway_headers(target, request_id))
    return headers


def gateway_headers(target: Target, request_id: str) -> dict[str, str]:
    """What the gateway itself sends upstream: the target's credential, and the call's id."""
    return {**target.credential, "X-Client-Request-Id": request_id}


def client_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    hop_by_hop = connection_options(upstream)
    decided = ANSWERED_NAMES.decided
    headers = CIMultiDict(
        (name, value)
        for name, value in upstream.items()
        if (((passes := decided.get(name)) is None and ANSWERED_NAMES.decide(name)) or passes)
        and (not hop_by_hop or name.lower() not in hop_by_hop)
    )
    upstream_id = upstream.get("x-request-id")
    if upstream_id:
        headers["x-upstream-request-id"] = upstream_id
    headers["X-Request-Id"] = request_id
    return headers


def connection_options(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The headers a `Connection` header names: meant for one hop, never forwarded (RFC 9110)."""
    values = headers.getall("Connection", ())
    if not values or (len(values) == 1 and values[0].lower() in PLAIN_CONNECTION_VALUES):
        return NO_OPTIONS
    return frozenset(
        option.strip().lower() for value in values for option in value.split(",")
    ).difference(PLAIN_CONNECTION_VALUES)


class CredentialAlarm:
    """An operator error when upstream starts refusing the gateway's credential.

    One line when the refusals start, then at most one a minute while they go on: every call
    fails alike, and a line per call would flood the log. Upstream's answer is never logged: it
    names the key.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self._line = Throttle(interval)
        self.refusing = False
        self.unreported = 0

    def refused(self, status: int, source: str) -> None:
        self.unreported += 1
        self.refusing = True
        if not self._line.due():
            return
        log.error(
            "upstream refused the gateway's credential with HTTP %d (refused calls since the"
            " last report: %d): check %s",
            status,
            self.unreported,
            source,
        )
        self.unreported = 0

    def accepted(self) -> None:
        self.refusing = False
        self.unreported = 0
        self._line.reset()
