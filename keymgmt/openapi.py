"""The OpenAPI document of the admin API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from keymgmt.eventsearch import EventQuerySchema
from keymgmt.keysearch import KeyQuerySchema
from keymgmt.openapi_config import KEY_ID, ok, policy_paths, problem, route_paths, setting_paths
from keymgmt.openapi_gateway import SCHEMAS, gateway_reporting_paths, user_paths
from shared.policy_schemas import CreatePolicySchema, PolicySchema, UpdatePolicySchema
from shared.route_schemas import (
    CACHE_CONFIG_CHANGE,
    COOL_DOWN_CHANGE,
    CreateRouteSchema,
    RouteSchema,
    UpdateRouteSchema,
)
from shared.schemas import (
    CreateKeySchema,
    CreateUserSchema,
    KeySchema,
    ProblemSchema,
    UpdateKeySchema,
    UpdateUserSchema,
    UserSchema,
)
from shared.setting_schemas import CreateSettingSchema, SettingSchema, UpdateSettingSchema


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


_START = _query("start", {"type": "number", "minimum": 0}, "unix seconds, inclusive")
_END = _query("end", {"type": "number", "minimum": 0}, "unix seconds, exclusive (default now)")


def _object(properties: dict[str, str]) -> dict[str, Any]:
    types = {name: {"type": kind} for name, kind in properties.items()}
    return {"type": "object", "properties": types}


_EVENT = _object(
    {
        "eventId": "string", "requestId": "string", "keyId": "string", "model": "string",
        "path": "string", "provider": "string", "settingId": "string", "status": "integer",
        "promptTokens": "integer",
        "completionTokens": "integer", "cachedTokens": "integer", "costInUsd": "number",
        "latencyMs": "number", "upstreamMs": "number", "streamed": "boolean",
        "createdAt": "integer", "policyId": "string", "policyAction": "string",
        "customId": "string", "userId": "string",
        # A route's calls only: the step and attempt (across steps), and a cache hit's saving.
        "routeId": "string", "routeStep": "integer", "routeAttempt": "integer",
        "cacheHit": "boolean", "savedCostInUsd": "number",
    }
)  # fmt: skip
_EVENT["properties"]["policyCounts"] = {
    "type": "object",
    "additionalProperties": {"type": "integer"},
    "nullable": True,
    "description": "hits by entity type (never the values); null when the key has no policy",
}
for _name in ("policyId", "policyAction", "customId", "userId"):
    _EVENT["properties"][_name]["nullable"] = True
_EVENT["properties"]["metadata"] = {"type": "object", "nullable": True}


def _reporting_paths(spec: APISpec) -> None:
    common = (400, 401, 503)
    spec.path(
        path="/api/reporting/keys/{keyId}",
        operations={"get": {
            "summary": "Spend so far, as the proxies have accounted it",
            "parameters": [KEY_ID],
            "responses": {**ok(_object({
                "keyId": "string", "costInUsd": "number", "costInUsdOverTime": "number",
                "costLimitInUsdUnit": "string", "requestsInWindow": "integer",
                "rateLimitUnit": "string",
            }), "the key's spend"), **problem(*common, 404)},
        }},
    )  # fmt: skip
    page = {**_object({"keyId": "string", "next": "string"}), "required": ["events"]}
    page["properties"]["events"] = {"type": "array", "items": _EVENT}
    page["properties"]["next"]["nullable"] = True
    spec.path(
        path="/api/reporting/keys/{keyId}/events",
        operations={"get": {
            "summary": "The key's usage events in a time range, oldest first, a page at a time",
            "parameters": [
                KEY_ID, _START, _END,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
                _query("cursor", {"type": "string"}, "`next` of the previous page"),
            ],
            "responses": {**ok(page, "a page of events"), **problem(*common, 404)},
        }},
    )  # fmt: skip
    bucket = _object({
        "start": "integer", "requests": "integer", "errors": "integer", "costInUsd": "number",
        "promptTokens": "integer", "completionTokens": "integer",
        "latencyP50Ms": "number", "latencyP99Ms": "number",
    })  # fmt: skip
    usage = _object({"keyId": "string", "granularity": "string"})
    usage["properties"]["buckets"] = {"type": "array", "items": bucket}
    spec.path(
        path="/api/reporting/keys/{keyId}/usage",
        operations={"get": {
            "summary": "Spend, requests, tokens and latency percentiles per hour or day",
            "parameters": [
                KEY_ID, _START, _END,
                _query("granularity", {"type": "string", "enum": ["hour", "day"]}, "bucket size"),
            ],
            "responses": {**ok(usage, "usage per bucket"), **problem(*common, 404)},
        }},
    )  # fmt: skip
    top = _object(
        {"keyId": "string", "name": "string", "costInUsd": "number", "requests": "integer"}
    )
    spec.path(
        path="/api/reporting/top-keys",
        operations={"get": {
            "summary": "The keys that spent most in a time range",
            "parameters": [
                _START, _END,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "how many"),
            ],
            "responses": {**ok({"type": "array", "items": top}, "keys by spend"),
                          **problem(*common)},
        }},
    )  # fmt: skip


def _listing(query: str, name: str, item: str | dict[str, Any], summary: str) -> dict[str, Any]:
    page = {
        "type": "object",
        "properties": {
            name: {"type": "array", "items": item},
            "count": {"type": "integer", "nullable": True,
                      "description": "rows matching, before paging; null unless returnCount"},
        },
    }  # fmt: skip
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": query}}},
        "responses": {**ok(page, "a page"), **problem(400, 401, 413, 503)},
    }}  # fmt: skip


def _listing_paths(spec: APISpec) -> None:
    spec.path(
        path="/api/v2/key-management/keys",
        operations=_listing(
            "KeyQuery", "keys", "Key", "Keys matching every filter given (never deleted ones)"
        ),
    )
    key_name = {"type": "string", "nullable": True, "description": "null when no such key exists"}
    logged = {"type": "string", "description": "only for a key that logs it (shouldLog...)"}
    flag = {"type": "boolean", "description": "cut at 1 MB"}
    event = {**_EVENT, "properties": {
        **_EVENT["properties"], "keyName": key_name, "requestContent": logged,
        "requestTruncated": flag, "responseContent": logged, "responseTruncated": flag,
    }}  # fmt: skip
    spec.path(
        path="/api/v2/events",
        operations=_listing(
            "EventQuery",
            "events",
            event,
            "Usage events matching every filter given, newest first unless ordered otherwise;"
            " actions are what a key's PII policy did to the call",
        ),
    )


def build_openapi(admin_pass_required: bool) -> dict[str, Any]:
    spec = APISpec(
        title="Gateway key management",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    for name, schema in (
        ("Key", KeySchema),
        ("CreateKey", CreateKeySchema),
        ("UpdateKey", UpdateKeySchema),
        ("Problem", ProblemSchema),
        ("KeyQuery", KeyQuerySchema),
        ("EventQuery", EventQuerySchema),
        ("ProviderSetting", SettingSchema),
        ("CreateProviderSetting", CreateSettingSchema),
        ("UpdateProviderSetting", UpdateSettingSchema),
        ("Route", RouteSchema),
        ("CreateRoute", CreateRouteSchema),
        ("CacheConfigChange", CACHE_CONFIG_CHANGE),
        ("CoolDownChange", COOL_DOWN_CHANGE),
        ("UpdateRoute", UpdateRouteSchema),
        ("Policy", PolicySchema),
        ("CreatePolicy", CreatePolicySchema),
        ("UpdatePolicy", UpdatePolicySchema),
        ("User", UserSchema),
        ("CreateUser", CreateUserSchema),
        ("UpdateUser", UpdateUserSchema),
        *SCHEMAS.items(),
    ):
        spec.components.schema(name, schema=schema)
    if admin_pass_required:
        spec.components.security_scheme(
            "adminPass", {"type": "apiKey", "in": "header", "name": "X-API-KEY"}
        )
        spec.options["security"] = [{"adminPass": []}]
    common = (400, 401, 503)
    spec.path(
        path="/api/key-management/keys",
        operations={
            "put": {
                "summary": "Create a key",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "CreateKey"}},
                },
                "responses": {**ok("Key"), **problem(*common, 409, 413)},
            },
            "get": {
                "summary": "Keys having any of the tags, or any of the ids",
                "parameters": [
                    {
                        "name": n,
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "explode": True,
                    }
                    for n in ("tag", "tags", "keyIds")
                ],
                "responses": {
                    **ok({"type": "array", "items": "Key"}, "matching keys"),
                    **problem(*common),
                },
            },
        },
    )
    spec.path(
        path="/api/key-management/keys/{keyId}",
        operations={
            "get": {
                "summary": "One key",
                "parameters": [KEY_ID],
                "responses": {**ok("Key"), **problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named",
                "parameters": [KEY_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "UpdateKey"}},
                },
                "responses": {**ok("Key"), **problem(*common, 404, 413)},
            },
            "delete": {
                "summary": "Delete a key; the proxy stops accepting it",
                "parameters": [KEY_ID],
                "responses": {"204": {"description": "deleted"}, **problem(*common, 404)},
            },
        },
    )
    _reporting_paths(spec)
    _listing_paths(spec)
    setting_paths(spec)
    route_paths(spec)
    policy_paths(spec)
    user_paths(spec)
    gateway_reporting_paths(spec)
    spec.path(
        path="/api/health",
        operations={
            "get": {
                "summary": "Liveness and readiness",
                "security": [],
                "responses": {
                    "200": {"description": "up, Postgres reachable"},
                    "503": {"description": "Postgres unreachable"},
                },
            }
        },
    )
    return spec.to_dict()
