"""Before admission: the call's end user, and the paths and models its key and user may call.

A path rule is the whole proxy path with its method, matched exactly, as BricksLLM's
`allowedPaths` are: `{"path": "/api/providers/openai/v1/chat/completions", "method": "POST"}`.
A model rule applies to the calls that name a model (a metered endpoint's body): the others use
none. Empty lists allow everything. Nothing is reserved for a refused call.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from proxy.annotations import read_annotations
from proxy.calls import Call
from proxy.errors import not_allowed
from proxy.users import UserSnapshot, attach_user


class Rules(Protocol):
    @property
    def allowed_paths(self) -> frozenset[tuple[str, str]]: ...

    @property
    def allowed_models(self) -> frozenset[str]: ...


def vet(call: Call, request: web.Request, users: UserSnapshot) -> None:
    """The call's user found, what the key and the user allow checked, the event's annotations
    read: everything the proxy decides about a call before admitting it."""
    attach_user(call, users)
    check_access(call, request.method, request.path)
    read_annotations(call, request.headers)


def check_access(call: Call, method: str, path: str) -> None:
    check_rules(call.key, "key", call, method, path)
    if call.user is not None:
        check_rules(call.user, "user", call, method, path)


def check_rules(rules: Rules, holder: str, call: Call, method: str, path: str) -> None:
    if rules.allowed_paths and (method, path) not in rules.allowed_paths:
        raise not_allowed(f"this {holder} may not call {method} {path}", "path_not_allowed")
    if call.model:
        check_model(rules, holder, call.model)


def check_model(rules: Rules, holder: str, model: str) -> None:
    """A model the key (or user) does not allow is a 403; a route's step checks its own."""
    if rules.allowed_models and model not in rules.allowed_models:
        raise not_allowed(f"this {holder} may not use model {model!r}", "model_not_allowed")
