"""The policies the proxy holds, compiled once per version, kept current like the keys."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.policies.compiled import CompiledPolicy, compile_policy
from proxy.snapshot import Source
from shared.models import Policy, RegexRule

log = logging.getLogger("gateway.policies")

QUERY = """
    SELECT policy_id::text, name, rules::text, regex_rules::text, restore,
        extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8,
        deleted_at IS NOT NULL
    FROM policies"""


def policy_of(row: Any) -> Policy:
    policy_id, name, rules, regex_rules, restore, created, updated, deleted = row
    return Policy(
        policy_id=policy_id,
        name=name,
        rules=orjson.loads(rules),
        regex_rules=tuple(
            RegexRule(rule["definition"], rule["action"]) for rule in orjson.loads(regex_rules)
        ),
        restore=restore,
        created_at=created,
        updated_at=updated,
        deleted=deleted,
    )


POLICIES: Source[Policy] = Source(
    "policy", "policies", QUERY, "policies.policy_id", policy_of, lambda policy: policy.policy_id
)


class PolicySnapshot:
    """Compiled policies by id, rebound in one assignment."""

    def __init__(self) -> None:
        self._by_id: dict[str, CompiledPolicy] = {}
        self.loaded = False
        self.refreshed_at = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, policy_id: str) -> CompiledPolicy | None:
        return self._by_id.get(policy_id)

    def replace(self, live: list[Policy]) -> None:
        self._by_id = self._compiled({}, live)
        self.loaded = True

    def apply(self, changed: list[Policy]) -> None:
        self._by_id = self._compiled(dict(self._by_id), changed)

    def _compiled(
        self, by_id: dict[str, CompiledPolicy], policies: Iterable[Policy]
    ) -> dict[str, CompiledPolicy]:
        current = self._by_id
        for policy in policies:
            if policy.deleted:
                by_id.pop(policy.policy_id, None)
                continue
            held = current.get(policy.policy_id)
            if held is not None and held.policy == policy:
                by_id[policy.policy_id] = held  # the same version: compiled already
                continue
            try:
                by_id[policy.policy_id] = compile_policy(policy)
            except Exception as error:
                # Keys of a policy the proxy cannot compile are refused, not let through.
                log.error("policy %s cannot be compiled: %s", policy.policy_id, error)
                by_id.pop(policy.policy_id, None)
        return by_id
