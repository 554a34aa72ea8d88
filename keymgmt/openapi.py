"""The OpenAPI document of the admin API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from shared.schemas import CreateKeySchema, KeySchema, ProblemSchema, UpdateKeySchema

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
        404: "no such key",
        409: "a key with this value exists",
        413: "body over 1 MB",
        503: "Postgres unavailable",
    }
    content = {"application/json": {"schema": "Problem"}}
    return {str(s): {"description": reasons[s], "content": content} for s in statuses}


def _ok(schema: str | dict[str, Any], description: str = "the key configuration") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


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
