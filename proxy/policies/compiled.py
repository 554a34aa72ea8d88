"""A policy made ready to scan with: its detectors in one pattern, each hit's action at hand."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policies.detect import BUILT_IN, Hit, Scanner, custom_detector
from shared.models import ALLOW, Policy


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy: Policy
    scanner: Scanner
    rule_actions: tuple[str, ...]  # by the index of the custom rules scanned for

    def action_of(self, hit: Hit) -> str:
        if hit.rule >= 0:
            return self.rule_actions[hit.rule]
        return self.policy.action_for(hit.entity)


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Only what the policy acts on is scanned for: an allowed entity costs nothing."""
    detectors = [d for d in BUILT_IN if policy.action_for(d.entity) != ALLOW]
    rules = [rule for rule in policy.regex_rules if rule.action != ALLOW]
    detectors += [custom_detector(rule.definition) for rule in rules]
    return CompiledPolicy(policy, Scanner(detectors), tuple(rule.action for rule in rules))
