"""Schemathesis against keymgmt's own OpenAPI document: no 5xx, and answers as documented.

Both generation modes (schema-valid and invalid requests), a bounded number of examples per
operation. The test is synchronous (schemathesis calls with `requests`), so keymgmt runs on a
real port in a thread with its own event loop rather than on pytest's, which it would block.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keymgmt.app import create_app
from keymgmt.openapi import build_openapi
from shared.config import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
START_TIMEOUT = 30.0
KEYS = "/api/key-management/keys"


class ThreadedServer:
    """A TestServer on 127.0.0.1, served by an event loop in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = TestServer(create_app(settings), host="127.0.0.1")

    def __enter__(self) -> str:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(self.server.start_server(), self.loop)
        started.result(START_TIMEOUT)
        return str(self.server.make_url("")).rstrip("/")

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(START_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT)
        self.loop.close()


@pytest.fixture
def keymgmt_url(settings: Settings) -> Iterator[str]:
    with ThreadedServer(replace(settings, admin_pass="")) as url:
        yield url


# The document keymgmt serves without ADMIN_PASS (test_served_document_is_the_one_tested checks
# that), built at import: parametrize needs the operations at collection time, and
# schemathesis.pytest.from_fixture, which would load it from the server, fails on pytest 9
# (schemathesis 4.32 reads the removed Function._nodeid).
schema = schemathesis.openapi.from_dict(build_openapi(admin_pass_required=False))


def test_served_document_is_the_one_tested(keymgmt_url: str) -> None:
    served = requests.get(f"{keymgmt_url}/api/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


def new_key_id(base_url: str) -> str:
    created = requests.put(
        f"{base_url}{KEYS}",
        json={"name": "schemathesis", "key": f"sk-st-{uuid.uuid4()}"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    return str(created.json()["keyId"])


@schema.parametrize()
@schema.given(existing_key=st.booleans())
@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_keymgmt_answers_as_its_openapi_document_says(
    case: schemathesis.Case, existing_key: bool, keymgmt_url: str
) -> None:
    # Random UUIDs only ever reach the 404 branch; half the cases address a key that exists.
    if existing_key and case.path_parameters and "keyId" in case.path_parameters:
        case.path_parameters["keyId"] = new_key_id(keymgmt_url)
    case.call_and_validate(base_url=keymgmt_url, checks=CHECKS, timeout=10)
