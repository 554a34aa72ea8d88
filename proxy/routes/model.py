"""Routes as the proxy holds them: parsed once from keymgmt's stored shape, immutable, durations
in seconds. `request_params` are read-only: a step's body is built as `{**body,
**step.request_params}`, never by changing them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.durations import parse_duration


@dataclass(frozen=True, slots=True)
class Step:
    provider: str
    model: str
    setting_id: str | None
    retries: int  # attempts after the first
    retry_interval: float  # seconds; the base of an exponential backoff
    timeout: float | None  # seconds per attempt; None: PROXY_TIMEOUT
    request_params: Mapping[str, Any]  # body fields set on this step
    params: Mapping[str, str] = field(default_factory=dict)  # its provider's (azure: deploymentId)

    @property
    def target(self) -> tuple[str, str | None, str]:
        """What a cool-down is kept for: the same provider, setting and model is one target."""
        return (self.provider, self.setting_id, self.model)


@dataclass(frozen=True, slots=True)
class Route:
    route_id: str
    path: str
    key_ids: frozenset[str]
    steps: tuple[Step, ...]
    exponential_backoff: bool  # retryStrategy "exponential"; else "constant"
    cache_enabled: bool
    cache_ttl: float  # seconds
    cool_down_failures: int  # consecutive failed calls before a target is skipped; 0: never
    cool_down_period: float  # seconds a target is skipped for
    updated_at: float = 0.0
    deleted: bool = False

    def allows(self, key_id: str) -> bool:
        return key_id in self.key_ids


def step_of(fields: Mapping[str, Any]) -> Step:
    timeout = fields.get("timeout")
    return Step(
        provider=fields["provider"],
        model=fields["model"],
        setting_id=fields.get("settingId"),
        retries=int(fields.get("retries", 0)),
        retry_interval=parse_duration(fields.get("retryInterval", "0")),
        timeout=None if timeout is None else parse_duration(timeout),
        request_params=MappingProxyType(dict(fields.get("requestParams") or {})),
        params=MappingProxyType(dict(fields.get("params") or {})),
    )


def route_of(
    route_id: str,
    path: str,
    key_ids: list[str],
    steps: list[Mapping[str, Any]],
    retry_strategy: str,
    cache_config: Mapping[str, Any],
    cool_down: Mapping[str, Any],
    *,
    updated_at: float = 0.0,
    deleted: bool = False,
) -> Route:
    """A Route from keymgmt's stored shape (shared.route_schemas, defaults filled in); raises
    KeyError, TypeError or ValueError for a shape it does not know."""
    return Route(
        route_id=route_id,
        path=path,
        key_ids=frozenset(key_ids),
        steps=tuple(step_of(step) for step in steps),
        exponential_backoff=retry_strategy == "exponential",
        cache_enabled=bool(cache_config["enabled"]),
        cache_ttl=parse_duration(cache_config["ttl"]),
        cool_down_failures=int(cool_down["failures"]),
        cool_down_period=parse_duration(cool_down["period"]),
        updated_at=updated_at,
        deleted=deleted,
    )
