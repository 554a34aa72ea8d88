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


def _policy_id(value: str) -> None:
    if value:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValidationError("must be a policy id (a UUID)") from None


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


def _check_setting_id(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValidationError("must be a provider setting's id (a UUID)") from None


def _setting_id_or_none(value: str) -> None:
    if value:
        _check_setting_id(value)


MAX_SETTINGS_PER_KEY = 64


class _KeyFields(Schema):
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
    policyId = fields.String(
        validate=_policy_id, allow_none=True, metadata={"description": 'null or "" for none'}
    )

    # The provider settings the key may use: one (settingId; "" or null for none) or several.
    settingId = fields.String(allow_none=True, validate=_setting_id_or_none)
    settingIds = fields.List(
        fields.String(validate=_check_setting_id),
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


class CreateKeySchema(_KeyFields):
    name = _text(required=True)
    key = _text(required=True, minimum=1, maximum=MAX_RAW_KEY)

    @validates_schema
    def _pairs(self, data: dict[str, Any], **_: Any) -> None:
        check_limit_pairs(data)


class UpdateKeySchema(_KeyFields):
    """A PATCH names only what changes; the merged pairs are checked against the stored key."""

    name = _text()
    revoked = StrictBoolean()
    revokedReason = _text(maximum=1024)


class KeySchema(Schema):
    """The key configuration as returned; never the raw key nor its hash."""

    keyId = fields.String(attribute="key_id")
    name = fields.String()
    createdAt = fields.Method("_created_at", metadata={"type": "integer"})
    updatedAt = fields.Method("_updated_at", metadata={"type": "integer"})
    revoked = fields.Boolean()
    revokedReason = fields.String(attribute="revoked_reason")
    tags = fields.List(fields.String())
    costLimitInUsd = fields.Float(attribute="cost_limit_in_usd")
    costLimitInUsdOverTime = fields.Float(attribute="cost_limit_in_usd_over_time")
    costLimitInUsdUnit = fields.String(attribute="cost_limit_in_usd_unit")
    rateLimitOverTime = WholeNumber(attribute="rate_limit_over_time")
    rateLimitUnit = fields.String(attribute="rate_limit_unit")
    ttl = fields.String()
    expiresAt = fields.Method("_expires_at", allow_none=True, metadata={"type": "integer"})
    settingId = fields.Method(
        "_setting_id",
        metadata={"type": "string", "description": "the first of settingIds; empty when none"},
    )
    settingIds = fields.List(fields.String(), attribute="setting_ids")
    rotationEnabled = fields.Boolean(attribute="rotation_enabled")
    policyId = fields.String(attribute="policy_id")

    def _created_at(self, key: Any) -> int:
        return int(key.created_at)

    def _updated_at(self, key: Any) -> int:
        return int(key.updated_at)

    def _expires_at(self, key: Any) -> int | None:
        return None if key.expires_at is None else int(key.expires_at)

    def _setting_id(self, key: Any) -> str:
        return key.setting_ids[0] if key.setting_ids else ""


class ProblemSchema(Schema):
    """The error shape of keymgmt (RFC 9457 problem details)."""

    status = fields.Integer(required=True)
    title = fields.String(required=True)
    type = fields.String(required=True)
    detail = fields.Raw(required=True)
    instance = fields.String(required=True)
