"""The OpenAPI document of the admin API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from keymgmt.eventsearch import EventQuerySchema
from keymgmt.keysearch import KeyQuerySchema
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

_KEY_ID = {
    "name": "keyId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _problem(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "invalid input",
        401: "missing or wrong admin pass",
        404: "no such key, route or policy",
        409: "a key with this value, or a route with this path, exists; a key refers to the policy",
        413: "body over 1 MB",
        503: "Postgres unavailable",
    }
    return _problems(reasons, statuses)


def _problems(reasons: dict[int, str], statuses: tuple[int, ...]) -> dict[str, Any]:
    content = {"application/json": {"schema": "Problem"}}
    return {str(s): {"description": reasons[s], "content": content} for s in statuses}


def _ok(schema: str | dict[str, Any], description: str = "the key configuration") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


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
        "path": "string", "status": "integer", "promptTokens": "integer",
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

_POLICY_ID = {**_KEY_ID, "name": "policyId"}


def _policy_paths(spec: APISpec) -> None:
    common = (400, 401, 503)
    body = {"required": True, "content": {"application/json": {"schema": "CreatePolicy"}}}
    changes = {"required": True, "content": {"application/json": {"schema": "UpdatePolicy"}}}
    tags = {"name": "tags", "in": "query", "explode": True,
            "schema": {"type": "array", "items": {"type": "string"}}}  # fmt: skip
    spec.path(
        path="/api/policies",
        operations={
            "post": {
                "summary": "Create a policy (a regexConfig pattern RE2 refuses is a 400 naming it)",
                "requestBody": body,
                "responses": {**_ok("Policy", "the policy"), **_problem(*common, 413)},
            },
            "get": {
                "summary": "Policies having any of the tags (every policy when none is given)",
                "parameters": [tags],
                "responses": {
                    **_ok({"type": "array", "items": "Policy"}, "matching policies"),
                    **_problem(*common),
                },
            },
        },
    )
    spec.path(
        path="/api/policies/{policyId}",
        operations={
            "get": {
                "summary": "One policy",
                "parameters": [_POLICY_ID],
                "responses": {**_ok("Policy", "the policy"), **_problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named",
                "parameters": [_POLICY_ID],
                "requestBody": changes,
                "responses": {**_ok("Policy", "the policy"), **_problem(*common, 404, 413)},
            },
            "delete": {
                "summary": "Delete a policy; refused (409) while a key refers to it",
                "parameters": [_POLICY_ID],
                "responses": {"204": {"description": "deleted"}, **_problem(*common, 404, 409)},
            },
        },
    )


def _reporting_paths(spec: APISpec) -> None:
    common = (400, 401, 503)
    spec.path(
        path="/api/reporting/keys/{keyId}",
        operations={"get": {
            "summary": "Spend so far, as the proxies have accounted it",
            "parameters": [_KEY_ID],
            "responses": {**_ok(_object({
                "keyId": "string", "costInUsd": "number", "costInUsdOverTime": "number",
                "costLimitInUsdUnit": "string", "requestsInWindow": "integer",
                "rateLimitUnit": "string",
            }), "the key's spend"), **_problem(*common, 404)},
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
                _KEY_ID, _START, _END,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
                _query("cursor", {"type": "string"}, "`next` of the previous page"),
            ],
            "responses": {**_ok(page, "a page of events"), **_problem(*common, 404)},
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
                _KEY_ID, _START, _END,
                _query("granularity", {"type": "string", "enum": ["hour", "day"]}, "bucket size"),
            ],
            "responses": {**_ok(usage, "usage per bucket"), **_problem(*common, 404)},
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
            "responses": {**_ok({"type": "array", "items": top}, "keys by spend"),
                          **_problem(*common)},
        }},
    )  # fmt: skip


_SETTING_ID = {**_KEY_ID, "name": "id"}
_SETTING_PROBLEMS = {
    400: "invalid input",
    401: "missing or wrong admin pass",
    404: "no such setting",
    409: "the name is taken (create, rename), or a key refers to the setting (delete)",
    413: "body over 1 MB",
    503: "Postgres unavailable, or SETTINGS_ENCRYPTION_KEY unset for a setting with an apikey",
}
_SETTING_BODY_NOTE = (
    "Per provider, `setting` takes: openai apikey (required), baseUrl, organization, project;"
    " anthropic apikey (required), baseUrl; azure apikey (required), resourceName or endpoint"
    " (exactly one), apiVersion; vllm url (required), apikey; deepinfra apikey (required);"
    " openai_compatible baseUrl (required), apikey. URLs are http(s) with a host, no"
    " credentials, query or fragment."
)


def _setting_paths(spec: APISpec) -> None:
    def problems(*statuses: int) -> dict[str, Any]:
        return _problems(_SETTING_PROBLEMS, statuses)

    def body(schema: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    one = _ok("ProviderSetting", "the setting (its apikey as ****<last 4>)")
    spec.path(
        path="/api/provider-settings",
        operations={"put": {
            "summary": "Create a provider setting",
            "description": _SETTING_BODY_NOTE,
            "requestBody": body("CreateProviderSetting"),
            "responses": {**one, **problems(400, 401, 409, 413, 503)},
        }, "get": {
            "summary": "Settings by id (`ids`, repeatable); without `ids`, every setting, by name",
            "parameters": [{"name": "ids", "in": "query", "explode": True, "schema": {
                "type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 100,
            }}],
            "responses": {**_ok({"type": "array", "items": "ProviderSetting"}, "the settings"),
                          **problems(400, 401, 503)},
        }},
    )  # fmt: skip
    spec.path(
        path="/api/provider-settings/{id}",
        operations={"get": {
            "summary": "One provider setting",
            "parameters": [_SETTING_ID],
            "responses": {**one, **problems(400, 401, 404, 503)},
        }, "patch": {
            "summary": "Change the fields named; `setting` is merged field by field (null removes)",
            "description": _SETTING_BODY_NOTE + " The provider cannot change.",
            "parameters": [_SETTING_ID],
            "requestBody": body("UpdateProviderSetting"),
            "responses": {**one, **problems(400, 401, 404, 409, 413, 503)},
        }, "delete": {
            "summary": "Delete a provider setting; refused while a key refers to it",
            "parameters": [_SETTING_ID],
            "responses": {"204": {"description": "deleted"},
                          **problems(400, 401, 404, 409, 503)},
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
        "responses": {**_ok(page, "a page"), **_problem(400, 401, 413, 503)},
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


_ROUTE_ID = {**_KEY_ID, "name": "routeId"}


_ROUTE_STEPS_NOTE = (
    "Every key in keyIds must be able to take every step: a step's settingId must be a live"
    " setting of the step's provider, allow the step's model, and be among each key's"
    " settingIds; a step without one needs a setting of its provider on each key (each allowing"
    " the model), or, for openai, a key without any setting. Anthropic steps serve chat"
    " completions only. Else a 400 naming the step and the key."
)


def _route_paths(spec: APISpec) -> None:
    common = (400, 401, 503)

    def body(schema: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    spec.path(
        path="/api/routes",
        operations={
            "post": {
                "summary": "Create a route",
                "description": _ROUTE_STEPS_NOTE,
                "requestBody": body("CreateRoute"),
                "responses": {**_ok("Route", "the route"), **_problem(*common, 409, 413)},
            },
            "get": {
                "summary": "Every route",
                "responses": {
                    **_ok({"type": "array", "items": "Route"}, "the routes"),
                    **_problem(401, 503),
                },
            },
        },
    )
    spec.path(
        path="/api/routes/{routeId}",
        operations={
            "get": {
                "summary": "One route",
                "parameters": [_ROUTE_ID],
                "responses": {**_ok("Route", "the route"), **_problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named (cacheConfig and coolDown field by field)",
                "description": _ROUTE_STEPS_NOTE,
                "parameters": [_ROUTE_ID],
                "requestBody": body("UpdateRoute"),
                "responses": {**_ok("Route", "the route"), **_problem(*common, 404, 409, 413)},
            },
            "delete": {
                "summary": "Delete a route; the proxy stops serving it",
                "parameters": [_ROUTE_ID],
                "responses": {"204": {"description": "deleted"}, **_problem(*common, 404)},
            },
        },
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
                "responses": {**_ok("Key"), **_problem(*common, 409, 413)},
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
                    **_ok({"type": "array", "items": "Key"}, "matching keys"),
                    **_problem(*common),
                },
            },
        },
    )
    spec.path(
        path="/api/key-management/keys/{keyId}",
        operations={
            "get": {
                "summary": "One key",
                "parameters": [_KEY_ID],
                "responses": {**_ok("Key"), **_problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named",
                "parameters": [_KEY_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "UpdateKey"}},
                },
                "responses": {**_ok("Key"), **_problem(*common, 404, 413)},
            },
            "delete": {
                "summary": "Delete a key; the proxy stops accepting it",
                "parameters": [_KEY_ID],
                "responses": {"204": {"description": "deleted"}, **_problem(*common, 404)},
            },
        },
    )
    _reporting_paths(spec)
    _listing_paths(spec)
    _setting_paths(spec)
    _route_paths(spec)
    _policy_paths(spec)
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
