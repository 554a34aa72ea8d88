"""End users as the proxy holds them, and which user a call belongs to.

A call names its end user in its body: `user` (OpenAI) or `metadata.user_id` (Anthropic). It
belongs to the live user with that `userId` who lists the call's key or shares a tag with it;
should several, the oldest. Both are one dict access per key id or tag.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.calls import Call
from proxy.errors import not_allowed
from proxy.snapshot import Source
from shared.models import User, paths_of

# (userId, key id or tag) -> the users indexed under it, by record id: almost always one.
Index = dict[tuple[str, str], dict[str, User]]


def _entries(user: User) -> list[tuple[str, str]]:
    return [(user.user_id, key_id) for key_id in user.key_ids] + [
        (user.user_id, f"tag:{tag}") for tag in user.tags
    ]


class UserSnapshot:
    def __init__(self) -> None:
        self._by_id: dict[str, User] = {}
        self._index: Index = {}
        self.loaded = False
        self.refreshed_at = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def by_id(self, record_id: str) -> User | None:
        return self._by_id.get(record_id)

    def replace(self, live: list[User]) -> None:
        by_id = {user.record_id: user for user in live}
        index: Index = {}
        for user in live:
            _add(index, user)
        self._by_id, self._index = by_id, index  # rebound in one step
        self.loaded = True

    def apply(self, changed: list[User]) -> None:
        by_id, index = self._by_id, self._index
        for user in changed:
            old = by_id.pop(user.record_id, None)
            if old is not None:
                for entry in _entries(old):
                    indexed = index.get(entry, {})
                    indexed.pop(old.record_id, None)
                    if not indexed:
                        index.pop(entry, None)
            if not user.deleted:
                by_id[user.record_id] = user
                _add(index, user)

    def find(self, user_id: str, key_id: str, tags: tuple[str, ...]) -> User | None:
        index = self._index
        if not index:
            return None
        found = index.get((user_id, key_id))
        for tag in tags:
            if found:
                break
            found = index.get((user_id, f"tag:{tag}"))
        if not found:
            return None
        if len(found) == 1:
            return next(iter(found.values()))
        return min(found.values(), key=lambda user: (user.created_at, user.record_id))


def _add(index: Index, user: User) -> None:
    for entry in _entries(user):
        index.setdefault(entry, {})[user.record_id] = user


USER_QUERY = """
    SELECT id::text, user_id, tags, key_ids::text[], revoked, cost_limit_in_usd,
        cost_limit_in_usd_over_time, cost_limit_in_usd_unit, rate_limit_over_time,
        rate_limit_unit, extract(epoch FROM created_at)::float8,
        extract(epoch FROM updated_at)::float8, extract(epoch FROM expires_at)::float8,
        deleted_at IS NOT NULL, allowed_paths::text, allowed_models
    FROM users"""


def user_of(row: Any) -> User:
    (record_id, user_id, tags, key_ids, revoked, cost, window_cost, window_unit, rate,
     rate_unit, created, updated, expires, deleted, paths, models) = row  # fmt: skip
    return User(
        record_id=record_id,
        user_id=user_id,
        created_at=created,
        updated_at=updated,
        tags=tuple(tags),
        key_ids=tuple(key_ids),
        revoked=revoked,
        cost_limit_in_usd=cost,
        cost_limit_in_usd_over_time=window_cost,
        cost_limit_in_usd_unit=window_unit,
        rate_limit_over_time=rate,
        rate_limit_unit=rate_unit,
        expires_at=expires,
        deleted=deleted,
        allowed_paths=paths_of(orjson.loads(paths)),
        allowed_models=frozenset(models),
    )


USERS: Source[User] = Source(
    "user", "users", USER_QUERY, "users.id", user_of, lambda user: user.record_id
)


def named_user(payload: dict[str, Any] | None) -> str:
    """The end user a body names: OpenAI's `user`, else Anthropic's `metadata.user_id`."""
    if not payload:
        return ""
    named = payload.get("user")
    if isinstance(named, str):
        return named
    metadata = payload.get("metadata")
    named = metadata.get("user_id") if isinstance(metadata, dict) else None
    return named if isinstance(named, str) else ""


def attach_user(call: Call, users: UserSnapshot) -> None:
    """Find the call's user; a revoked or expired one is refused, before anything is reserved."""
    user_id = named_user(call.payload)
    if not user_id:
        return
    call.user_id = user_id
    user = users.find(user_id, call.key.key_id, call.key.tags)
    if user is None:
        return
    if user.revoked:
        raise not_allowed("this end user is revoked", "user_revoked")
    if user.expired(time.time()):
        raise not_allowed("this end user has expired", "user_expired")
    call.user = user
