"""The OpenAPI paths of provider settings, routes and policies, and the helpers all paths share."""

from __future__ import annotations

from typing import Any

from apispec import APISpec

KEY_ID = {
    "name": "keyId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def problem(*statuses: int) -> dict[str, Any]:
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


def ok(schema: str | dict[str, Any], description: str = "the key configuration") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


_POLICY_ID = {**KEY_ID, "name": "policyId"}


def policy_paths(spec: APISpec) -> None:
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
                "responses": {**ok("Policy", "the policy"), **problem(*common, 413)},
            },
            "get": {
                "summary": "Policies having any of the tags (every policy when none is given)",
                "parameters": [tags],
                "responses": {
                    **ok({"type": "array", "items": "Policy"}, "matching policies"),
                    **problem(*common),
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
                "responses": {**ok("Policy", "the policy"), **problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named",
                "parameters": [_POLICY_ID],
                "requestBody": changes,
                "responses": {**ok("Policy", "the policy"), **problem(*common, 404, 413)},
            },
            "delete": {
                "summary": "Delete a policy; refused (409) while a key refers to it",
                "parameters": [_POLICY_ID],
                "responses": {"204": {"description": "deleted"}, **problem(*common, 404, 409)},
            },
        },
    )


_SETTING_ID = {**KEY_ID, "name": "id"}
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


def setting_paths(spec: APISpec) -> None:
    def problems(*statuses: int) -> dict[str, Any]:
        return _problems(_SETTING_PROBLEMS, statuses)

    def body(schema: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    one = ok("ProviderSetting", "the setting (its apikey as ****<last 4>)")
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
            "responses": {**ok({"type": "array", "items": "ProviderSetting"}, "the settings"),
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


_ROUTE_ID = {**KEY_ID, "name": "routeId"}


_ROUTE_STEPS_NOTE = (
    "Every key in keyIds must be able to take every step: a step's settingId must be a live"
    " setting of the step's provider, allow the step's model, and be among each key's"
    " settingIds; a step without one needs a setting of its provider on each key (each allowing"
    " the model), or, for openai, a key without any setting. Anthropic steps serve chat"
    " completions only. Else a 400 naming the step and the key."
)


def route_paths(spec: APISpec) -> None:
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
                "responses": {**ok("Route", "the route"), **problem(*common, 409, 413)},
            },
            "get": {
                "summary": "Every route",
                "responses": {
                    **ok({"type": "array", "items": "Route"}, "the routes"),
                    **problem(401, 503),
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
                "responses": {**ok("Route", "the route"), **problem(*common, 404)},
            },
            "patch": {
                "summary": "Change the fields named (cacheConfig and coolDown field by field)",
                "description": _ROUTE_STEPS_NOTE,
                "parameters": [_ROUTE_ID],
                "requestBody": body("UpdateRoute"),
                "responses": {**ok("Route", "the route"), **problem(*common, 404, 409, 413)},
            },
            "delete": {
                "summary": "Delete a route; the proxy stops serving it",
                "parameters": [_ROUTE_ID],
                "responses": {"204": {"description": "deleted"}, **problem(*common, 404)},
            },
        },
    )
