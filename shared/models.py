"""The key model: a plain typed object shared by keymgmt (which writes it) and the proxy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(slots=True)
class Key:
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

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def cost_window_seconds(self) -> int:
        return UNIT_SECONDS.get(self.cost_limit_in_usd_unit, 0)

    @property
    def rate_window_seconds(self) -> int:
        return UNIT_SECONDS.get(self.rate_limit_unit, 0)


def hash_key(raw_key: str) -> str:
    """Keys are stored and looked up by this digest only; the raw key is never kept."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()
