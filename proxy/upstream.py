"""The upstream side: one shared ClientSession, and which headers cross the proxy each way."""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from shared.config import Settings

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


def create_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.proxy_timeout),
        auto_decompress=True,
        read_bufsize=2**16,
    )


def upstream_headers(
    client_headers: CIMultiDictProxy[str], settings: Settings, request_id: str
) -> dict[str, str]:
    headers = {
        name: value
        for name, value in client_headers.items()
        if (lowered := name.lower()) in FORWARDED_REQUEST_HEADERS
        or lowered.startswith(FORWARDED_REQUEST_PREFIXES)
    }
    hop_by_hop = connection_options(client_headers)
    if hop_by_hop:
        headers = {name: value for name, value in headers.items() if name.lower() not in hop_by_hop}
    # Set last, so that nothing the client sends or names in Connection replaces them.
    headers["Authorization"] = f"Bearer {settings.openai_api_key}"
    headers["X-Client-Request-Id"] = request_id
    if settings.openai_organization:
        headers["OpenAI-Organization"] = settings.openai_organization
    if settings.openai_project:
        headers["OpenAI-Project"] = settings.openai_project
    return headers


def client_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    hop_by_hop = connection_options(upstream)
    headers = CIMultiDict(
        (name, value)
        for name, value in upstream.items()
        if (lowered := name.lower()) not in DROPPED_RESPONSE_HEADERS
        and not lowered.startswith(DROPPED_RESPONSE_PREFIXES)
        and lowered not in hop_by_hop
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

