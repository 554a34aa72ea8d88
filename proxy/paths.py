"""The path a client asked for, normalised once, and the upstream URL made from it alone.

What is metered must be what upstream serves, so the endpoint is one canonical string: the
decoded path after the proxy's prefix with repeated and outer slashes dropped. A dot segment is
refused rather than resolved. The upstream URL is the base URL, that endpoint re-encoded and the
query string as the client encoded it; nothing of the request target's authority is in it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote

from yarl import URL

from proxy.errors import invalid_path

OPENAI_PREFIX = "/api/providers/openai/v1"  # where the proxy serves the OpenAI API
# Besides the unreserved characters, what a path may carry unencoded (RFC 3986 pchar and "/").
PATH_SAFE = "/!$&'()*+,;=:@"
NEEDS_QUOTING = re.compile(f"[^A-Za-z0-9{re.escape('-._~' + PATH_SAFE)}]")
DOT_SEGMENTS = frozenset({".", ".."})


def normalised_endpoint(tail: str) -> str:
    """`chat/completions` for the decoded path after the prefix; a dot segment is a 400."""
    # A segment that could be a dot segment starts with "." or "%" (double-encoded "%2e").
    if not (
        tail.startswith(("/", ".", "%"))
        or tail.endswith("/")
        or "//" in tail
        or "/." in tail
        or "/%" in tail
    ):
        return tail
    segments = [segment for segment in tail.split("/") if segment]
    for segment in segments:
        if segment.lower().replace("%2e", ".") in DOT_SEGMENTS:
            raise invalid_path(f"the path may not contain the segment {segment!r}")
    return "/".join(segments)


class Origin(NamedTuple):
    scheme: str
    authority: str  # host and port (and any user info) as written


class UpstreamBase(NamedTuple):
    prefix: str  # the base URL as configured, without a trailing slash
    origin: Origin


@lru_cache(maxsize=1024)
def upstream_base(base_url: str) -> UpstreamBase:
    """A provider's base URL parsed, once per process."""
    return UpstreamBase(base_url.rstrip("/"), origin_of(URL(base_url, encoded=True)))


def origin_of(url: URL) -> Origin:
    return Origin(url.scheme, url.raw_authority)


def upstream_url(base_url: str, endpoint: str, query: str) -> URL:
    base = upstream_base(base_url)
    if NEEDS_QUOTING.search(endpoint) is not None:
        endpoint = quote(endpoint, safe=PATH_SAFE)
    target = f"{base.prefix}/{endpoint}"
    url = URL(f"{target}?{query}" if query else target, encoded=True)
    require_origin(url, base.origin)
    return url


def require_origin(url: URL, origin: Origin) -> None:
    """The upstream credential goes to the configured scheme, host and port only."""
    if origin_of(url) != origin:
        raise invalid_path("the request path does not resolve to the upstream")
