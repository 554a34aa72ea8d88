"""The endpoint a proxied path names, and the upstream URL built from it."""

from __future__ import annotations

import pytest
from yarl import URL

from proxy.errors import ProxyError
from proxy.paths import normalised_endpoint, require_origin, upstream_base, upstream_url


@pytest.mark.parametrize(
    "tail",
    ["chat/completions", "models/gpt-3.5-turbo", "files/file-abc/content", "", "a/.env", "x%2e"],
)
def test_a_clean_path_is_its_own_endpoint(tail: str) -> None:
    assert normalised_endpoint(tail) == tail


@pytest.mark.parametrize(
    ("tail", "endpoint"),
    [
        ("chat//completions", "chat/completions"),
        ("/chat/completions/", "chat/completions"),
        ("//chat///completions//", "chat/completions"),
        ("models/.hidden", "models/.hidden"),
        ("models/%2ex", "models/%2ex"),
        ("/", ""),
    ],
)
def test_slashes_are_merged_and_stripped(tail: str, endpoint: str) -> None:
    assert normalised_endpoint(tail) == endpoint


@pytest.mark.parametrize(
    "tail",
    [".", "..", "x/../chat/completions", "./chat", "chat/.", "a/%2e%2e/b", "a/.%2E/b", "%2e"],
)
def test_a_dot_segment_is_a_400(tail: str) -> None:
    with pytest.raises(ProxyError) as raised:
        normalised_endpoint(tail)
    assert (raised.value.status, raised.value.code) == (400, "invalid_path")


def test_the_url_is_the_base_the_endpoint_and_the_query() -> None:
    url = upstream_url("http://llm-gw", "chat/completions", "")
    assert str(url) == "http://llm-gw/chat/completions"
    assert str(upstream_url("https://api.example/v1/", "models", "")) == (
        "https://api.example/v1/models"
    )


def test_the_query_string_keeps_the_clients_encoding() -> None:
    url = upstream_url("http://llm-gw:8080/v1", "files", "purpose=a%20b&after=x%2Fy&flag")
    assert url.raw_query_string == "purpose=a%20b&after=x%2Fy&flag"
    assert url.raw_path == "/v1/files"


@pytest.mark.parametrize(
    ("endpoint", "raw_path"),
    [
        ("models/a%b?c#d e", "/v1/models/a%25b%3Fc%23d%20e"),
        ("models/ft:gpt-4o:org@evil.com:1", "/v1/models/ft:gpt-4o:org@evil.com:1"),
        ("models/\u00e9", "/v1/models/%C3%A9"),
    ],
)
def test_the_endpoint_is_encoded_into_the_path_only(endpoint: str, raw_path: str) -> None:
    url = upstream_url("http://llm-gw:8080/v1", endpoint, "")
    assert (url.scheme, url.host, url.port, url.raw_path) == ("http", "llm-gw", 8080, raw_path)
    assert url.raw_query_string == "" and url.fragment == ""


@pytest.mark.parametrize(
    "elsewhere",
    [
        "http://llm-gw.evil.com/v1/x",
        "https://llm-gw/v1/x",
        "http://llm-gw:81/v1/x",
        "http://x@llm-gw/v1/x",
        "http://x/",
    ],
)
def test_a_url_off_the_base_origin_is_refused(elsewhere: str) -> None:
    with pytest.raises(ProxyError) as raised:
        require_origin(URL(elsewhere), upstream_base("http://llm-gw/v1").origin)
    assert (raised.value.status, raised.value.code) == (400, "invalid_path")
    require_origin(URL("http://llm-gw/other"), upstream_base("http://llm-gw/v1").origin)
