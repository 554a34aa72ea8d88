"""The OpenAPI paths of users, and of the original gateway's events and reporting endpoints."""

from __future__ import annotations

from typing import Any

from apispec import APISpec

from keymgmt.gateway_reporting import ByDaySchema, ReportingSchema, TopKeysSchema

PROBLEMS = {
    400: "invalid input",
    401: "missing or wrong admin pass",
    404: "no such user",
    413: "body over 1 MB",
    503: "Postgres (or, for spend, Redis) unavailable",
}
USER_ID = {"name": "id", "in": "path", "required": True,
           "schema": {"type": "string", "format": "uuid"}}  # fmt: skip
SCHEMAS = {"ReportingQuery": ReportingSchema, "ByDayQuery": ByDaySchema,
           "TopKeysQuery": TopKeysSchema}  # fmt: skip


def _problems(*statuses: int) -> dict[str, Any]:
    content = {"application/json": {"schema": "Problem"}}
    return {str(s): {"description": PROBLEMS[s], "content": content} for s in statuses}


def _ok(schema: Any, description: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema}}}}  # fmt: skip


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, kind: str, description: str, many: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if many:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "schema": schema, "description": description,
            **({"explode": True} if many else {})}  # fmt: skip


def _object(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: kind if isinstance(kind, dict) else {"type": kind}
            for name, kind in properties.items()
        },
    }


NULLABLE_TEXT = {"type": "string", "nullable": True}
DATA_POINT = _object(
    timeStamp="integer", numberOfRequests="integer", costInUsd="number", latencyInMs="integer",
    promptTokenCount="integer", completionTokenCount="integer", successCount="integer",
    model="string", keyId="string", customId="string", userId="string",
)  # fmt: skip
ORIGINAL_EVENT = _object(
    id="string", created_at="integer", tags={"type": "array", "items": {"type": "string"}},
    key_id="string", cost_in_usd="number", provider="string", model="string", status="integer",
    prompt_token_count="integer", completion_token_count="integer", latency_in_ms="integer",
    path="string", method="string", custom_id="string", request=NULLABLE_TEXT,
    response=NULLABLE_TEXT, userId="string", action="string", policyId="string",
    routeId="string", correlationId="string",
    metadata={"type": "object", "nullable": True},
)  # fmt: skip


def user_paths(spec: APISpec) -> None:
    common = (400, 401, 503)
    spec.path(path="/api/users", operations={
        "post": {"summary": "Create an end user", "requestBody": _body("CreateUser"),
                 "responses": {**_ok("User", "the user"), **_problems(*common, 413)}},
        "get": {
            "summary": "Users having any of the tags, listing any of the keys, or having any of"
                       " the user ids (all users without a filter), oldest first",
            "parameters": [
                _query("tags", "string", "a tag", many=True),
                _query("keyIds", "string", "a key id", many=True),
                _query("userIds", "string", "a userId", many=True),
                _query("offset", "integer", "users skipped"),
                _query("limit", "integer", "page size, 1 to 1000 (default 100)"),
            ],
            "responses": {**_ok({"type": "array", "items": "User"}, "matching users"),
                          **_problems(*common)},
        },
    })  # fmt: skip
    spec.path(path="/api/users/{id}", operations={
        "patch": {"summary": "Change the fields named", "parameters": [USER_ID],
                  "requestBody": _body("UpdateUser"),
                  "responses": {**_ok("User", "the user"), **_problems(*common, 404, 413)}},
        "delete": {"summary": "Delete a user; the proxies stop applying it",
                   "parameters": [USER_ID],
                   "responses": {"204": {"description": "deleted"},
                                 **_problems(*common, 404)}},
    })  # fmt: skip
    spend = _object(id="string", userId="string", costInUsd="number",
                    costInUsdOverTime="number", costLimitInUsdUnit="string",
                    requestsInWindow="integer", rateLimitUnit="string")  # fmt: skip
    spec.path(path="/api/reporting/users/{id}", operations={"get": {
        "summary": "A user's spend, as the proxies charged it", "parameters": [USER_ID],
        "responses": {**_ok(spend, "the user's spend"), **_problems(*common, 404)},
    }})  # fmt: skip


def gateway_reporting_paths(spec: APISpec) -> None:
    common = (400, 401, 503)
    spec.path(path="/api/events", operations={"get": {
        "summary": "Events (the original gateway's shape) of keyIds within start and end,"
                   " and/or of a customId, and/or of a userId; at most 10,000, oldest first",
        "parameters": [
            _query("keyIds", "string", "a key id; needs start and end", many=True),
            _query("customId", "string", "X-CUSTOM-EVENT-ID of the call"),
            _query("userId", "string", "the end user the call named"),
            _query("start", "number", "unix seconds, inclusive"),
            _query("end", "number", "unix seconds, exclusive"),
        ],
        "responses": {**_ok({"type": "array", "items": ORIGINAL_EVENT}, "events"),
                      **_problems(*common)},
    }})  # fmt: skip
    report = _object(dataPoints={"type": "array", "items": DATA_POINT},
                     latencyInMsMedian="number", latencyInMs99th="number")  # fmt: skip
    points = _object(dataPoints={"type": "array", "items": DATA_POINT})
    top = _object(dataPoints={"type": "array", "items": _object(keyId="string",
                                                                costInUsd="number")})  # fmt: skip
    for path, schema, answer, summary in (
        ("/api/reporting/events", "ReportingQuery", report,
         "Per `increment` seconds from start: requests, cost, summed latency and tokens,"
         " split by `filters` (model, keyId, customId, userId)"),
        ("/api/reporting/events-by-day", "ByDayQuery", points, "Per UTC day and key"),
        ("/api/reporting/top-keys", "TopKeysQuery", top,
         "Live keys matching the filters by their spend within start and end"),
    ):  # fmt: skip
        spec.path(path=path, operations={"post": {
            "summary": summary, "requestBody": _body(schema),
            "responses": {**_ok(answer, "the report"), **_problems(*common, 413)},
        }})  # fmt: skip
    for path, what in (("/api/reporting/user-ids", "end users"),
                       ("/api/reporting/custom-ids", "custom event ids")):  # fmt: skip
        spec.path(path=path, operations={"get": {
            "summary": f"The {what} of a key's events",
            "parameters": [{**_query("keyId", "string", "the key"), "required": True}],
            "responses": {**_ok({"type": "array", "items": {"type": "string"}}, what),
                          **_problems(*common)},
        }})  # fmt: skip
