"""Policy shapes at the HTTP edge of keymgmt (BricksLLM's): create, update and response apart."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.models import ACTIONS, ALL_ENTITIES, ENTITIES
from shared.patterns import pattern_problem
from shared.schemas import MAX_TAGS, MAX_TEXT, StrictBoolean, _storable_text, _text

MAX_REGEX_RULES = 100
ACTION_CHOICE = validate.OneOf(ACTIONS, error=f"must be one of {', '.join(ACTIONS)}")
ENTITY_CHOICE = validate.OneOf(
    (*ENTITIES, ALL_ENTITIES), error=f"must be one of {', '.join((*ENTITIES, ALL_ENTITIES))}"
)


def _re2(definition: str) -> None:
    _storable_text(definition)
    problem = pattern_problem(definition)
    if problem is not None:
        raise ValidationError(f"{definition!r}: {problem}")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class RulesSchema(_Strict):
    rules = fields.Dict(
        keys=fields.String(validate=ENTITY_CHOICE), values=fields.String(validate=ACTION_CHOICE)
    )


class RegexRuleSchema(_Strict):
    definition = fields.String(required=True, validate=_re2, metadata={"description": "RE2"})
    action = fields.String(required=True, validate=ACTION_CHOICE)


class RegexRulesSchema(_Strict):
    rules = fields.List(
        fields.Nested(RegexRuleSchema), validate=validate.Length(max=MAX_REGEX_RULES)
    )


class _PolicyFields(_Strict):
    tags = fields.List(
        fields.String(validate=[validate.Length(max=MAX_TEXT), _storable_text]),
        validate=validate.Length(max=MAX_TAGS),
    )
    config = fields.Nested(RulesSchema)
    regexConfig = fields.Nested(RegexRulesSchema)
    restore = StrictBoolean(
        metadata={"description": "put redacted values back into the answer; never secrets"}
    )


class CreatePolicySchema(_PolicyFields):
    name = _text(required=True)


class UpdatePolicySchema(_PolicyFields):
    name = _text()


class PolicySchema(Schema):
    """A policy as returned."""

    id = fields.String(attribute="policy_id")
    name = fields.String()
    tags = fields.List(fields.String())
    config = fields.Method("_config")
    regexConfig = fields.Method("_regex_config")
    restore = fields.Boolean()
    createdAt = fields.Method("_created_at", metadata={"type": "integer"})
    updatedAt = fields.Method("_updated_at", metadata={"type": "integer"})

    def _config(self, policy: Any) -> dict[str, Any]:
        return {"rules": dict(policy.rules)}

    def _regex_config(self, policy: Any) -> dict[str, Any]:
        rules = [{"definition": r.definition, "action": r.action} for r in policy.regex_rules]
        return {"rules": rules}

    def _created_at(self, policy: Any) -> int:
        return int(policy.created_at)

    def _updated_at(self, policy: Any) -> int:
        return int(policy.updated_at)
