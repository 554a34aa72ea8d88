"""Marshmallow schemas of routes at the HTTP edge of keymgmt: create, update and response apart.

What is stored is what the create schema loads, every default filled in, in the API's own
camelCase shape; the proxy parses the same shape (proxy/routes/model.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from shared.durations import parse_duration
from shared.jsonutil import number_past_jsonb
from shared.schemas import DURATION_PATTERN, StrictBoolean, WholeNumber, _storable_text, _text

PROVIDERS = ("openai", "anthropic", "azure", "vllm", "deepinfra", "openai_compatible")
RETRY_STRATEGIES = ("constant", "exponential")
MAX_STEPS = 10
MAX_RETRIES = 10
MAX_KEY_IDS = 1000
MAX_PATH = 256
MAX_RETRY_INTERVAL = 300.0  # a step waits at most 5 minutes between its attempts
MAX_STEP_TIMEOUT = 3600.0
MAX_CACHE_TTL = 7 * 86400.0
MAX_COOL_DOWN = 3600.0
MAX_COOL_DOWN_FAILURES = 1000
MAX_REQUEST_PARAMS_BYTES = 16 * 1024
# Set by the step itself (model) or by the client's call (the rest): a step may not override them.
RESERVED_REQUEST_PARAMS = frozenset({"model", "messages", "input", "stream", "stream_options"})

DEFAULT_RETRY_INTERVAL = "1s"
DEFAULT_CACHE_TTL = "1h"
# A target failing this many calls in a row is skipped for the period, then tried again.
DEFAULT_COOL_DOWN_FAILURES = 3
DEFAULT_COOL_DOWN_PERIOD = "30s"

# Segments of URL-safe characters; no empty segment, no trailing slash.
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def _spoken(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def _duration_within(least: float, most: float) -> Callable[[str], None]:
    def check(value: str) -> None:
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if not least <= seconds <= most:
            raise ValidationError(f"must be a duration from {_spoken(least)} to {_spoken(most)}")

    return check


def _duration(least: float, most: float, *, description: str = "", **kwargs: Any) -> fields.String:
    # A bare 0 needs no unit; the pattern says so where zero is allowed.
    pattern = f"^(0|{DURATION_PATTERN[1:-1]})$" if least == 0 else DURATION_PATTERN
    metadata = {"pattern": pattern} | ({"description": description} if description else {})
    return fields.String(
        validate=_duration_within(least, most),
        metadata=metadata,
        **kwargs,
    )


def _uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValidationError("must be a UUID") from None


def _path(value: str) -> None:
    if len(value) > MAX_PATH or not _PATH.fullmatch(value):
        raise ValidationError(
            f"must start with / and be at most {MAX_PATH} characters of letters, digits and"
            " . _ ~ - in non-empty segments, without a trailing /"
        )
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValidationError("must not contain . or .. segments")


def _storable_json(value: Any) -> None:
    """Postgres jsonb takes no NUL in a string, nor an unpaired surrogate: a 400, not a 500."""
    if isinstance(value, str):
        _storable_text(value)
    elif isinstance(value, dict):
        for name, each in value.items():
            _storable_text(name)
            _storable_json(each)
    elif isinstance(value, list):
        for each in value:
            _storable_json(each)


def _request_params(value: dict[str, Any]) -> None:
    reserved = sorted(RESERVED_REQUEST_PARAMS & value.keys())
    if reserved:
        raise ValidationError(f"must not set {', '.join(reserved)}: the step or the call does")
    try:  # orjson refuses unpaired surrogates, and nesting deeper than 254 levels
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise ValidationError(f"cannot be stored: {error}") from None
    if len(encoded) > MAX_REQUEST_PARAMS_BYTES:
        raise ValidationError(f"must be at most {MAX_REQUEST_PARAMS_BYTES} bytes as JSON")
    _storable_json(value)
    past = number_past_jsonb(value)
    if past is not None:
        raise ValidationError(f"numbers must be below 2**63 in magnitude, not {past!r}")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class AzureParamsSchema(_Strict):
    deploymentId = _text(minimum=1)  # default: the step's model
    apiVersion = _text(minimum=1, maximum=64)


class StepSchema(_Strict):
    provider = fields.String(required=True, validate=validate.OneOf(PROVIDERS))
    model = _text(required=True, minimum=1)
    settingId = fields.String(
        validate=_uuid, allow_none=True, load_default=None, metadata={"format": "uuid"}
    )
    retries = WholeNumber(validate=validate.Range(min=0, max=MAX_RETRIES), load_default=0)
    retryInterval = _duration(0, MAX_RETRY_INTERVAL, load_default=DEFAULT_RETRY_INTERVAL)
    timeout = _duration(
        0.001,
        MAX_STEP_TIMEOUT,
        allow_none=True,
        load_default=None,
        description="each attempt's; null: PROXY_TIMEOUT",
    )
    params = fields.Nested(AzureParamsSchema, load_default=dict)
    requestParams = fields.Dict(keys=fields.String(), validate=_request_params, load_default=dict)

    @validates_schema
    def _params_for_azure(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("params") and data.get("provider") != "azure":
            raise ValidationError("only azure steps take params", "params")

    @post_load
    def _canonical_setting_id(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("settingId") is not None:
            data["settingId"] = str(uuid.UUID(data["settingId"]))
        return data


class CacheConfigSchema(_Strict):
    enabled = StrictBoolean(load_default=False)
    ttl = _duration(1.0, MAX_CACHE_TTL, load_default=DEFAULT_CACHE_TTL)


class CoolDownSchema(_Strict):
    failures = WholeNumber(
        validate=validate.Range(min=0, max=MAX_COOL_DOWN_FAILURES),
        load_default=DEFAULT_COOL_DOWN_FAILURES,
        metadata={"description": "consecutive failed calls before a target is skipped; 0: never"},
    )
    period = _duration(1.0, MAX_COOL_DOWN, load_default=DEFAULT_COOL_DOWN_PERIOD)


def _key_ids() -> fields.List:
    return fields.List(
        fields.String(validate=_uuid, metadata={"format": "uuid"}),
        validate=validate.Length(max=MAX_KEY_IDS),
    )


def _steps(**kwargs: Any) -> fields.List:
    return fields.List(
        fields.Nested(StepSchema), validate=validate.Length(min=1, max=MAX_STEPS), **kwargs
    )


def _path_field(**kwargs: Any) -> fields.String:
    # The pattern in the OpenAPI document; _path also refuses dot segments, and gives the message.
    return fields.String(validate=_path, metadata={"pattern": f"^{_PATH.pattern}$"}, **kwargs)


def _retry_strategy(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(RETRY_STRATEGIES), **kwargs)


def canonical_key_ids(key_ids: list[str]) -> list[str]:
    """Each id once, in its canonical form, in the order given."""
    return list(dict.fromkeys(str(uuid.UUID(key_id)) for key_id in key_ids))


class _KeyIdsCanonical(_Strict):
    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "keyIds" in data:
            data["keyIds"] = canonical_key_ids(data["keyIds"])
        return data


class CreateRouteSchema(_KeyIdsCanonical):
    name = _text(required=True, minimum=1)
    path = _path_field(required=True)
    keyIds = _key_ids()
    steps = _steps(required=True)
    retryStrategy = _retry_strategy(load_default="constant")
    cacheConfig = fields.Nested(CacheConfigSchema)
    coolDown = fields.Nested(CoolDownSchema)

    @post_load
    def _defaults(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Nested defaults come from loading an empty object, so they are stated once.
        data.setdefault("keyIds", [])
        data.setdefault("cacheConfig", CacheConfigSchema().load({}))
        data.setdefault("coolDown", CoolDownSchema().load({}))
        return data


CACHE_CONFIG_CHANGE = CacheConfigSchema(partial=True)
COOL_DOWN_CHANGE = CoolDownSchema(partial=True)


class UpdateRouteSchema(_KeyIdsCanonical):
    """A PATCH names what changes: `steps` and `keyIds` are replaced whole, `cacheConfig` and
    `coolDown` merged field by field into the stored ones."""

    name = _text(minimum=1)
    path = _path_field()
    keyIds = _key_ids()
    steps = _steps()
    retryStrategy = _retry_strategy()
    cacheConfig = fields.Nested(CACHE_CONFIG_CHANGE)
    coolDown = fields.Nested(COOL_DOWN_CHANGE)


class RouteSchema(Schema):
    """A route as returned."""

    id = fields.String()
    name = fields.String()
    path = fields.String()
    keyIds = fields.List(fields.String())
    steps = fields.List(fields.Nested(StepSchema))
    retryStrategy = fields.String()
    cacheConfig = fields.Nested(CacheConfigSchema)
    coolDown = fields.Nested(CoolDownSchema)
    createdAt = fields.Integer()
    updatedAt = fields.Integer()
