"""Marshmallow schemas at the HTTP edge of keymgmt: create, update and response shapes apart."""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from shared.durations import parse_duration
from shared.models import UNIT_SECONDS

MAX_TEXT = 256
MAX_TAGS = 64
MAX_RAW_KEY = 4096
MAX_COST_USD = 1e12
MAX_RATE = 2**31 - 1
UNITS = tuple(UNIT_SECONDS)

_DURATION_PART = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h|d)"
DURATION_PATTERN = f"^{_DURATION_PART}({_DURATION_PART})*$"

LIMIT_PAIRS = (
    ("costLimitInUsdOverTime", "costLimitInUsdUnit"),
    ("rateLimitOverTime", "rateLimitUnit"),
)


def _storable_text(value: str) -> None:
    """Postgres text takes neither NUL nor unpaired surrogates; refuse them here, not with a 500."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be valid Unicode") from None


def _duration(value: str) -> None:
    _storable_text(value)
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None
    if seconds <= 0 or seconds > 100 * 365 * 86400:
        raise ValidationError("must be a positive duration of at most 100 years")


def _uuid_or_empty(what: str) -> Any:
    """A validator: an id (a UUID) of `what`, or "" for none."""

    def check(value: str) -> None:
        if value:
            try:
                uuid.UUID(value)
            except ValueError:
                raise ValidationError(f"must be {what} (a UUID)") from None

    return check


def _text(*, required: bool = False, minimum: int = 0, maximum: int = MAX_TEXT) -> fields.String:
    return fields.String(
        required=required,
        validate=[validate.Length(min=minimum, max=maximum), _storable_text],
    )


class StrictBoolean(fields.Boolean):
    """Only JSON true and false: "yes" or 1 for a flag is a client bug worth a 400."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        # Not by membership of truthy sets: 1 == True in Python, so 1 and 0 would pass.
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class WholeNumber(fields.Integer):
    """An integer given as a JSON number or a numeric string; 1.5 is refused, not truncated."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


UNIT_CHOICE = validate.OneOf(
    (*UNITS, ""), error="must be one of s (seconds), m (minutes), h (hours) or d (days)"
)


def _unit() -> fields.String:
    return fields.String(validate=UNIT_CHOICE, allow_none=True)


MAX_RULES = 256  # allowedPaths or allowedModels entries
MAX_WINDOWS = 8  # rateLimits entries
MAX_PATH = 2048
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _proxy_path(value: str) -> None:
    _storable_text(value)
    if not value.startswith("/"):
        raise ValidationError("must be a proxy path starting with /")


class PathRuleSchema(Schema):
    """One path a key or user may call: the whole proxy path and its method, matched exactly."""

    class Meta:
        unknown = RAISE

    path = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_PATH), _proxy_path]
    )
    method = fields.String(
        required=True,
        validate=validate.OneOf((*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS))),
    )


class RateWindowSchema(Schema):
    """An extra rate window, held exactly like rateLimitOverTime and rateLimitUnit."""

    class Meta:
        unknown = RAISE

    overTime = WholeNumber(required=True, validate=validate.Range(min=1, max=MAX_RATE))
    unit = fields.String(required=True, validate=validate.OneOf(UNITS, error=UNIT_CHOICE.error))


class AccessFields(Schema):
    """What a key or a user may call: empty lists (the default) allow everything."""

    class Meta:
        unknown = RAISE

    allowedPaths = fields.List(
        fields.Nested(PathRuleSchema), validate=validate.Length(max=MAX_RULES)
    )
    allowedModels = fields.List(
        fields.String(validate=[validate.Length(min=1, max=MAX_TEXT), _storable_text]),
        validate=validate.Length(max=MAX_RULES),
    )


class _LimitFields(AccessFields):
    class Meta:
        unknown = RAISE

    tags = fields.List(
        fields.String(validate=[validate.Length(max=MAX_TEXT), _storable_text]),
        validate=validate.Length(max=MAX_TAGS),
    )
    costLimitInUsd = fields.Float(validate=validate.Range(min=0, max=MAX_COST_USD), allow_none=True)
    costLimitInUsdOverTime = fields.Float(
        validate=validate.Range(min=0, max=MAX_COST_USD), allow_none=True
    )
    costLimitInUsdUnit = _unit()
    rateLimitOverTime = WholeNumber(validate=validate.Range(min=0, max=MAX_RATE), allow_none=True)
    rateLimitUnit = _unit()
    # The pattern is documented in the OpenAPI document; _duration alone gives the message.
    ttl = fields.String(validate=_duration, allow_none=True, metadata={"pattern": DURATION_PATTERN})


MAX_SETTINGS_PER_KEY = 64


class _KeyOnlyFields(Schema):
    rateLimits = fields.List(
        fields.Nested(RateWindowSchema), validate=validate.Length(max=MAX_WINDOWS)
    )
    shouldLogRequest = StrictBoolean()
    shouldLogResponse = StrictBoolean()
    policyId = fields.String(
        validate=_uuid_or_empty("a policy id"),
        allow_none=True,
        metadata={"description": 'null or "" for none'},
    )
    # The provider settings the key may use: one (settingId; "" or null for none) or several.
    settingId = fields.String(allow_none=True, validate=_uuid_or_empty("a provider setting's id"))
    settingIds = fields.List(
        fields.String(validate=[validate.Length(min=1), _uuid_or_empty("a provider setting's id")]),
        validate=validate.Length(max=MAX_SETTINGS_PER_KEY),
    )
    rotationEnabled = StrictBoolean()

    @validates_schema
    def _one_setting_field(self, data: dict[str, Any], **_: Any) -> None:
        if "settingId" in data and "settingIds" in data:
            raise ValidationError("give settingId or settingIds, not both", "settingId")


def check_limit_pairs(values: dict[str, Any]) -> None:
    """Each windowed limit and its unit come together or not at all."""
    for amount_field, unit_field in LIMIT_PAIRS:
        has_amount = bool(values.get(amount_field))
        has_unit = bool(values.get(unit_field))
        if has_amount != has_unit:
            missing = unit_field if has_amount else amount_field
            raise ValidationError(
                f"{amount_field} and {unit_field} must be given together", missing
            )


class CreateKeySchema(_LimitFields, _KeyOnlyFields):
    name = _text(required=True)
    key = _text(required=True, minimum=1, maximum=MAX_RAW_KEY)

    @validates_schema
    def _pairs(self, data: dict[str, Any], **_: Any) -> None:
        check_limit_pairs(data)


class UpdateKeySchema(_LimitFields, _KeyOnlyFields):
    """A PATCH names only what changes; the merged pairs are checked against the stored key."""

    name = _text()
    revoked = StrictBoolean()
    revokedReason = _text(maximum=1024)


PATHS_SCHEMA = {
    "type": "array",
    "items": {"type": "object", "properties": {"path": {"type": "string"},
                                               "method": {"type": "string"}}},
}  # fmt: skip


class _ConfigurationSchema(Schema):
    """What a key and a user return alike: times and access rules."""

    createdAt = fields.Method("_created_at", metadata={"type": "integer"})
    updatedAt = fields.Method("_updated_at", metadata={"type": "integer"})
    expiresAt = fields.Method("_expires_at", allow_none=True, metadata={"type": "integer"})
    allowedPaths = fields.Method("_allowed_paths", metadata=PATHS_SCHEMA)
    allowedModels = fields.Method(
        "_allowed_models", metadata={"type": "array", "items": {"type": "string"}}
    )

    def _created_at(self, holder: Any) -> int:
        return int(holder.created_at)

    def _updated_at(self, holder: Any) -> int:
        return int(holder.updated_at)

    def _expires_at(self, holder: Any) -> int | None:
        return None if holder.expires_at is None else int(holder.expires_at)

    def _allowed_paths(self, holder: Any) -> list[dict[str, str]]:
        return dump_paths(holder.allowed_paths)

    def _allowed_models(self, holder: Any) -> list[str]:
        return sorted(holder.allowed_models)


class KeySchema(_ConfigurationSchema):
    """The key configuration as returned; never the raw key nor its hash."""

    keyId = fields.String(attribute="key_id")
    name = fields.String()
    revoked = fields.Boolean()
    revokedReason = fields.String(attribute="revoked_reason")
    tags = fields.List(fields.String())
    costLimitInUsd = fields.Float(attribute="cost_limit_in_usd")
    costLimitInUsdOverTime = fields.Float(attribute="cost_limit_in_usd_over_time")
    costLimitInUsdUnit = fields.String(attribute="cost_limit_in_usd_unit")
    rateLimitOverTime = WholeNumber(attribute="rate_limit_over_time")
    rateLimitUnit = fields.String(attribute="rate_limit_unit")
    ttl = fields.String()
    rateLimits = fields.Method(
        "_rate_limits",
        metadata={"type": "array", "items": {"type": "object", "properties": {
            "overTime": {"type": "integer"}, "unit": {"type": "string"}}}},
    )  # fmt: skip
    shouldLogRequest = fields.Boolean(attribute="should_log_request")
    shouldLogResponse = fields.Boolean(attribute="should_log_response")
    settingId = fields.Method(
        "_setting_id",
        metadata={"type": "string", "description": "the first of settingIds; empty when none"},
    )
    settingIds = fields.List(fields.String(), attribute="setting_ids")
    rotationEnabled = fields.Boolean(attribute="rotation_enabled")
    policyId = fields.String(attribute="policy_id")

    def _rate_limits(self, key: Any) -> list[dict[str, Any]]:
        return [{"overTime": count, "unit": unit} for count, unit in key.rate_limits]

    def _setting_id(self, key: Any) -> str:
        return key.setting_ids[0] if key.setting_ids else ""


class ProblemSchema(Schema):
    """The error shape of keymgmt (RFC 9457 problem details)."""

    status = fields.Integer(required=True)
    title = fields.String(required=True)
    type = fields.String(required=True)
    detail = fields.Raw(required=True)
    instance = fields.String(required=True)


def dump_paths(rules: Any) -> list[dict[str, str]]:
    return [{"path": path, "method": method} for method, path in sorted(rules)]


MAX_USER_KEYS = 1000


class _UserFields(_LimitFields):
    name = _text()
    keyIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_USER_KEYS))
    revoked = StrictBoolean()
    revokedReason = _text(maximum=1024)


class CreateUserSchema(_UserFields):
    userId = _text(required=True, minimum=1)

    @validates_schema
    def _pairs(self, data: dict[str, Any], **_: Any) -> None:
        check_limit_pairs(data)


class UpdateUserSchema(_UserFields):
    """A PATCH names only what changes; the merged pairs are checked against the stored user."""

    userId = _text(minimum=1)


class UserSchema(_ConfigurationSchema):
    """An end user as returned."""

    id = fields.String(attribute="record_id")
    userId = fields.String(attribute="user_id")
    name = fields.String()
    tags = fields.List(fields.String())
    keyIds = fields.List(fields.String(), attribute="key_ids")
    revoked = fields.Boolean()
    revokedReason = fields.String(attribute="revoked_reason")
    costLimitInUsd = fields.Float(attribute="cost_limit_in_usd")
    costLimitInUsdOverTime = fields.Float(attribute="cost_limit_in_usd_over_time")
    costLimitInUsdUnit = fields.String(attribute="cost_limit_in_usd_unit")
    rateLimitOverTime = WholeNumber(attribute="rate_limit_over_time")
    rateLimitUnit = fields.String(attribute="rate_limit_unit")
    ttl = fields.String()
