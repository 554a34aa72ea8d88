"""Which headers cross the proxy, each way."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.providers import OPENAI
from proxy.upstream import client_headers, upstream_headers
from shared.config import Settings

SETTINGS = Settings(openai_api_key="sk-gw", openai_organization="org-gw")


def headers_of(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_only_the_allowlist_and_the_gateway_own_headers_go_upstream() -> None:
    sent = upstream_headers(
        headers_of(
            ("Authorization", "Bearer sk-client"),
            ("Cookie", "a=b"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Host", "evil.example"),
            ("OpenAI-Organization", "org-client"),
            ("OpenAI-Project", "proj_client"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Content-Type", "application/json"),
            ("X-Stainless-Os", "Linux"),
            ("OpenAI-Beta", "assistants=v2"),
        ),
        OPENAI.default_target(SETTINGS),
        "req-1",
    )
    assert sent == {
        "Content-Type": "application/json",
        "X-Stainless-Os": "Linux",
        "OpenAI-Beta": "assistants=v2",
        "Authorization": "Bearer sk-gw",
        "X-Client-Request-Id": "req-1",
        "OpenAI-Organization": "org-gw",
    }


def test_headers_the_clients_connection_names_stay_at_the_proxy() -> None:
    sent = upstream_headers(
        headers_of(
            ("Connection", "keep-alive, X-Stainless-Retry-Count"),
            ("Connection", "openai-beta"),
            ("X-Stainless-Retry-Count", "0"),
            ("X-Stainless-Lang", "python"),
            ("OpenAI-Beta", "assistants=v2"),
        ),
        OPENAI.default_target(SETTINGS),
        "req-1",
    )
    assert "X-Stainless-Lang" in sent
    assert "X-Stainless-Retry-Count" not in sent and "OpenAI-Beta" not in sent


def test_answers_lose_hop_headers_and_the_organisation_identity() -> None:
    kept = client_headers(
        headers_of(
            ("Content-Type", "application/json"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "for this hop"),
            ("openai-organization", "org-upstream"),
            ("openai-project", "proj_upstream"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-tokens", "29999000"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", "req_up"),
        ),
        "req-1",
    )
    assert dict(kept) == {
        "Content-Type": "application/json",
        "openai-version": "2020-10-01",
        "x-upstream-request-id": "req_up",
        "X-Request-Id": "req-1",
    }
