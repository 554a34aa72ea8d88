"""The configuration models: plain typed objects shared by keymgmt (which writes them) and the
proxy."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Limited:
    """What keys and users share: an expiry and windowed limits, with their units."""

    __slots__ = ()
    expires_at: float | None
    cost_limit_in_usd_unit: str
    rate_limit_unit: str

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def cost_window_seconds(self) -> int:
        return UNIT_SECONDS.get(self.cost_limit_in_usd_unit, 0)

    @property
    def rate_window_seconds(self) -> int:
        return UNIT_SECONDS.get(self.rate_limit_unit, 0)


@dataclass(slots=True)
class Key(Limited):
    """A gateway key. Limits of 0 (and an empty unit) mean "no limit", as in the original."""

    key_id: str
    name: str
    key_hash: str
    created_at: float
    updated_at: float
    tags: tuple[str, ...] = ()
    revoked: bool = False
    revoked_reason: str = ""
    cost_limit_in_usd: float = 0.0
    cost_limit_in_usd_over_time: float = 0.0
    cost_limit_in_usd_unit: str = ""
    rate_limit_over_time: int = 0
    rate_limit_unit: str = ""
    ttl: str = ""
    expires_at: float | None = None
    deleted: bool = False
    setting_ids: tuple[str, ...] = ()  # provider settings the key may use (settingId/settingIds)
    rotation_enabled: bool = False  # spread calls over the key's settings of one provider
    policy_id: str = ""  # the policy its requests are screened by; "" for none
    # (METHOD, full proxy path) pairs the key may call, and the models; empty: any.
    allowed_paths: frozenset[tuple[str, str]] = frozenset()
    allowed_models: frozenset[str] = frozenset()
    # Extra rate windows beyond rate_limit_over_time: (requests, unit) pairs, each held alike.
    rate_limits: tuple[tuple[int, str], ...] = ()
    should_log_request: bool = False
    should_log_response: bool = False


@dataclass(slots=True)
class User(Limited):
    """An end user of an application, known by `user_id` on the calls of the keys it lists or
    shares a tag with; its limits hold together with the key's. `record_id` is its own id."""

    record_id: str
    user_id: str
    created_at: float
    updated_at: float
    name: str = ""
    tags: tuple[str, ...] = ()
    key_ids: tuple[str, ...] = ()
    revoked: bool = False
    revoked_reason: str = ""
    cost_limit_in_usd: float = 0.0
    cost_limit_in_usd_over_time: float = 0.0
    cost_limit_in_usd_unit: str = ""
    rate_limit_over_time: int = 0
    rate_limit_unit: str = ""
    ttl: str = ""
    expires_at: float | None = None
    allowed_paths: frozenset[tuple[str, str]] = frozenset()
    allowed_models: frozenset[str] = frozenset()
    deleted: bool = False


@dataclass(slots=True, frozen=True)
class ProviderSetting:
    """Upstream credentials and options a key may use, as the proxy holds them (secret decrypted).

    `options` are the setting's non-secret fields by their API names: baseUrl, url, resourceName,
    endpoint, apiVersion, organization, project. `cost_map` maps promptCostPerModel,
    completionCostPerModel and embeddingsCostPerModel to {model: USD per 1,000 tokens}.
    """

    setting_id: str
    provider: str
    name: str
    secret: str = ""  # the decrypted apikey; only ever in the proxy's memory
    options: Mapping[str, str] = field(default_factory=dict)
    allowed_models: frozenset[str] = frozenset()  # empty: every model
    cost_map: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    updated_at: float = 0.0
    deleted: bool = False

    def __repr__(self) -> str:  # never the secret, whoever prints the object
        return f"ProviderSetting({self.setting_id!r}, {self.provider!r}, {self.name!r})"

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


def paths_of(stored: list[dict[str, str]]) -> frozenset[tuple[str, str]]:
    """allowedPaths as stored ([{"path", "method"}]) to (METHOD, path) pairs."""
    return frozenset((rule["method"], rule["path"]) for rule in stored)


def windows_of(stored: list[dict[str, Any]]) -> tuple[tuple[int, str], ...]:
    """rateLimits as stored ([{"overTime", "unit"}]) to (requests, unit) pairs."""
    return tuple((int(window["overTime"]), str(window["unit"])) for window in stored)


def hash_key(raw_key: str) -> str:
    """Keys are stored and looked up by this digest only; the raw key is never kept."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


# Policies: what the proxy looks for in a request, and what it does with each kind it finds.
ENTITIES = (
    "email", "phone", "credit_debit_number", "ssn", "ip_address",
    "international_bank_account_number", "url", "mac_address", "aws_access_key",
    "aws_secret_key", "api_key", "private_key", "jwt",
)  # fmt: skip
ALL_ENTITIES = "all"  # a rule for every entity the policy names no rule for
CUSTOM = "custom"  # what a regexConfig rule's hits are called, in placeholders and counts
BLOCK, REDACT, WARN, ALLOW = "block", "allow_but_redact", "allow_but_warn", "allow"
ACTIONS = (BLOCK, REDACT, WARN, ALLOW)  # strongest first
# Credentials: redacted for good, never put back into an answer.
SECRETS = frozenset({"api_key", "aws_secret_key", "private_key", "jwt"})


@dataclass(slots=True, frozen=True)
class RegexRule:
    definition: str  # RE2 syntax
    action: str


@dataclass(slots=True, frozen=True)
class Policy:
    policy_id: str
    name: str
    rules: Mapping[str, str] = field(default_factory=dict)  # entity (or "all") -> action
    regex_rules: tuple[RegexRule, ...] = ()
    restore: bool = False
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    deleted: bool = False

    def action_for(self, entity: str) -> str:
        return self.rules.get(entity) or self.rules.get(ALL_ENTITIES) or ALLOW
