"""Marshmallow schemas of provider settings: create, update and response shapes apart.

Which fields each provider's `setting` takes and requires is one table (SHAPES); a PATCH merges
its `setting` into the stored one and the merged fields are checked against the same table.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from shared.schemas import MAX_TEXT, _storable_text

SECRET = "apikey"
MAX_URL = 2048
MAX_SECRET = 4096
MAX_MODELS = 1000
MAX_PRICE_PER_1K = 1e6
NAME_PATTERN = "^[A-Za-z0-9._-]{1,64}$"  # a setting's name is a path segment of the proxy
URL_FIELDS = ("baseUrl", "url", "endpoint")
COST_MAPS = ("promptCostPerModel", "completionCostPerModel", "embeddingsCostPerModel")


@dataclass(frozen=True)
class Shape:
    fields: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # exactly one of these


SHAPES = {
    "openai": Shape((SECRET, "baseUrl", "organization", "project"), required=(SECRET,)),
    "anthropic": Shape((SECRET, "baseUrl"), required=(SECRET,)),
    "azure": Shape(
        (SECRET, "resourceName", "endpoint", "apiVersion"),
        required=(SECRET,),
        one_of=("resourceName", "endpoint"),
    ),
    "vllm": Shape((SECRET, "url"), required=("url",)),
    "deepinfra": Shape((SECRET,), required=(SECRET,)),
    "openai_compatible": Shape((SECRET, "baseUrl"), required=("baseUrl",)),
}
PROVIDERS = tuple(SHAPES)


def _matching(pattern: str, what: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: str) -> None:
        if not compiled.fullmatch(value):
            raise ValidationError(f"must be {what}")

    return check


def _name(value: str) -> None:
    _matching(NAME_PATTERN, "1 to 64 of the characters A-Z a-z 0-9 . _ -")(value)
    if set(value) == {"."}:
        raise ValidationError("must not be only dots (it is a path segment)")


def _url(value: str) -> None:
    _storable_text(value)
    if len(value) > MAX_URL or any(c.isspace() or not c.isprintable() for c in value):
        raise ValidationError(f"must be a URL of at most {MAX_URL} characters, without spaces")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as error:
        raise ValidationError(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("must not carry credentials (give the key as apikey)")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValidationError("must have no query string or fragment")


def _field(check: Any, maximum: int = MAX_TEXT, pattern: str | None = None) -> fields.String:
    # null removes the field in a PATCH, and means "not given" on create
    metadata = {"pattern": pattern} if pattern else {}
    return fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=maximum), check],
        metadata=metadata,
    )


VISIBLE_ASCII = "^[!-~]+$"  # what goes into an upstream header: no spaces, no control characters


class SettingFieldsSchema(Schema):
    """The `setting` object; which of its fields a provider takes is SHAPES'."""

    class Meta:
        unknown = RAISE

    apikey = _field(_matching(VISIBLE_ASCII, "printable ASCII"), MAX_SECRET, VISIBLE_ASCII)
    baseUrl = _field(_url, MAX_URL)
    url = _field(_url, MAX_URL)
    endpoint = _field(_url, MAX_URL)
    resourceName = _field(
        _matching("^[A-Za-z0-9][A-Za-z0-9-]{0,63}$", "an Azure resource name (letters, digits, -)"),
        64,
        "^[A-Za-z0-9][A-Za-z0-9-]{0,63}$",
    )
    apiVersion = _field(
        _matching(r"^[A-Za-z0-9._-]{1,64}$", "an api-version such as 2024-10-21"),
        64,
        "^[A-Za-z0-9._-]{1,64}$",
    )
    organization = _field(_matching(VISIBLE_ASCII, "printable ASCII"), pattern=VISIBLE_ASCII)
    project = _field(_matching(VISIBLE_ASCII, "printable ASCII"), pattern=VISIBLE_ASCII)

    @post_load
    def _without_trailing_slash(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Stored as OPENAI_BASE_URL is read: the gateway appends "/<path>" to each.
        for name in URL_FIELDS:
            if data.get(name):
                data[name] = data[name].rstrip("/")
        return data


def check_setting(provider: str, setting: dict[str, Any]) -> None:
    """The fields given (None: absent) against what `provider` takes and requires."""
    shape = SHAPES[provider]
    given = {name for name, value in setting.items() if value is not None}
    errors: dict[str, list[str]] = {}
    for name in sorted(given - set(shape.fields)):
        errors[name] = [f"not a field of a {provider} setting"]
    for name in shape.required:
        if name not in given:
            errors[name] = [f"required for a {provider} setting"]
    if shape.one_of and len(given & set(shape.one_of)) != 1:
        either = " or ".join(shape.one_of)
        errors[shape.one_of[0]] = [f"a {provider} setting takes {either}, exactly one of them"]
    if errors:
        raise ValidationError({"setting": errors})


def _model_list() -> fields.List:
    model = fields.String(validate=[validate.Length(min=1, max=MAX_TEXT), _storable_text])
    return fields.List(model, validate=validate.Length(max=MAX_MODELS))


def _prices() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=MAX_TEXT), _storable_text]),
        values=fields.Float(validate=validate.Range(min=0, max=MAX_PRICE_PER_1K)),
        validate=validate.Length(max=MAX_MODELS),
        metadata={"description": "model -> USD per 1,000 tokens"},
    )


class CostMapSchema(Schema):
    class Meta:
        unknown = RAISE

    promptCostPerModel = _prices()
    completionCostPerModel = _prices()
    embeddingsCostPerModel = _prices()


PROVIDER_CHOICE = validate.OneOf(PROVIDERS, error=f"must be one of {', '.join(PROVIDERS)}")


class _SettingBody(Schema):
    class Meta:
        unknown = RAISE

    allowedModels = _model_list()
    costMap = fields.Nested(CostMapSchema)


class CreateSettingSchema(_SettingBody):
    provider = fields.String(required=True, validate=PROVIDER_CHOICE)
    name = fields.String(required=True, validate=_name, metadata={"pattern": NAME_PATTERN})
    setting = fields.Nested(SettingFieldsSchema, load_default=dict)

    @validates_schema
    def _shape(self, data: dict[str, Any], **_: Any) -> None:
        check_setting(data["provider"], data["setting"])


class UpdateSettingSchema(_SettingBody):
    """A PATCH names what changes; `setting` is merged field by field (null removes a field)."""

    provider = fields.String(
        validate=PROVIDER_CHOICE, metadata={"description": "cannot change; only the same value"}
    )
    name = fields.String(validate=_name, metadata={"pattern": NAME_PATTERN})
    setting = fields.Nested(SettingFieldsSchema)


def masked(hint: str) -> str:
    return f"****{hint}"


class SettingSchema(Schema):
    """A setting as returned: its secret only as `****` and its last 4 characters."""

    id = fields.String(attribute="setting_id")
    createdAt = fields.Method("_created_at", metadata={"type": "integer"})
    updatedAt = fields.Method("_updated_at", metadata={"type": "integer"})
    provider = fields.String()
    name = fields.String()
    setting = fields.Method("_setting", metadata={"type": "object"})
    allowedModels = fields.List(fields.String(), attribute="allowed_models")
    costMap = fields.Method("_cost_map", metadata={"type": "object"})

    def _created_at(self, setting: Any) -> int:
        return int(setting.created_at)

    def _updated_at(self, setting: Any) -> int:
        return int(setting.updated_at)

    def _setting(self, setting: Any) -> dict[str, str]:
        shown = dict(setting.options)
        if setting.has_secret:
            shown[SECRET] = masked(setting.secret_hint)
        return shown

    def _cost_map(self, setting: Any) -> dict[str, dict[str, float]]:
        return {name: dict(setting.cost_map.get(name, {})) for name in COST_MAPS}
