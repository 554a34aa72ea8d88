"""The provider-settings API, and the settings keys refer to, against a real Postgres."""

from __future__ import annotations

import logging
import shutil
import subprocess
import uuid
from dataclasses import replace
from glob import glob
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from shared.config import Settings
from shared.secrets import SecretBox
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.integration.test_keymgmt_api import KEYS, assert_problem, db, new_key

__all__ = ["db"]  # the fixture, shared with the key API's tests

SETTINGS = "/api/provider-settings"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


def secret() -> str:
    return f"sk-clear-{uuid.uuid4().hex}"


def new_setting(provider: str = "openai", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "provider": provider,
        "name": f"s-{uuid.uuid4().hex[:12]}",
        "setting": {"apikey": secret()},
    }
    body.update(fields)
    return body


async def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.put(SETTINGS, json=new_setting(**fields))
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def problem(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    assert_problem(body, status, response.url.path)
    return body["detail"]


VALID = [
    ("openai", {"apikey": "sk-a", "baseUrl": "https://example.com/v1", "organization": "org-1",
                "project": "proj_1"}),
    ("anthropic", {"apikey": "sk-ant", "baseUrl": "https://api.anthropic.com"}),
    ("azure", {"apikey": "az", "resourceName": "my-resource", "apiVersion": "2024-10-21"}),
    ("azure", {"apikey": "az", "endpoint": "https://my.openai.azure.com"}),
    ("vllm", {"url": "http://10.0.0.5:8000"}),
    ("vllm", {"url": "http://vllm", "apikey": "token"}),
    ("deepinfra", {"apikey": "di"}),
    ("openai_compatible", {"baseUrl": "http://localhost:11434/v1"}),
    ("openai_compatible", {"baseUrl": "https://api.groq.com/openai/v1", "apikey": "gsk"}),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "setting"), VALID)
async def test_each_provider_with_its_fields(
    client: TestClient, provider: str, setting: dict[str, str]
) -> None:
    created = await create(client, provider=provider, setting=setting)
    assert uuid.UUID(created["id"])
    assert created["provider"] == provider
    shown = dict(setting)
    if "apikey" in shown:
        shown["apikey"] = "****"  # shorter than 8 characters: no hint
    assert created["setting"] == shown
    assert created["allowedModels"] == []
    assert created["costMap"] == {
        "promptCostPerModel": {}, "completionCostPerModel": {}, "embeddingsCostPerModel": {}
    }  # fmt: skip
    assert created["createdAt"] == created["updatedAt"] > 0
    response = await client.get(f"{SETTINGS}/{created['id']}")
    assert await response.json() == created


async def test_the_secret_is_never_returned_and_is_sealed_at_rest(
    client: TestClient, db: Any
) -> None:
    clear = secret()
    response = await client.put(SETTINGS, json=new_setting(setting={"apikey": clear}))
    assert clear not in await response.text()
    created = await response.json()
    assert created["setting"]["apikey"] == "****" + clear[-4:]
    row = await db.fetchrow(
        "SELECT secret, secret_hint, options::text FROM provider_settings WHERE setting_id = $1",
        created["id"],
    )
    assert clear.encode() not in row["secret"] and clear not in row["options"]
    assert SecretBox(TEST_ENCRYPTION_KEY).decrypt(row["secret"], created["id"]) == clear
    for listed in (f"{SETTINGS}?ids={created['id']}", SETTINGS, f"{SETTINGS}/{created['id']}"):
        assert clear not in await (await client.get(listed)).text()


async def test_listing_by_ids_and_all(client: TestClient) -> None:
    first, second, third = [await create(client) for _ in range(3)]
    response = await client.get(SETTINGS, params=[("ids", first["id"]), ("ids", third["id"])])
    assert response.status == 200
    assert {s["id"] for s in await response.json()} == {first["id"], third["id"]}
    every = {s["id"] for s in await (await client.get(SETTINGS)).json()}
    assert {first["id"], second["id"], third["id"]} <= every
    await problem(await client.get(SETTINGS, params={"ids": "nope"}), 400)
    for count in (101, 400):  # 400 ids pass the HTTP parser's default 8 KB request line
        too_many = [("ids", str(uuid.uuid4())) for _ in range(count)]
        assert "at most 100" in await problem(await client.get(SETTINGS, params=too_many), 400)
    unknown = str(uuid.uuid4())
    assert await (await client.get(SETTINGS, params={"ids": unknown})).json() == []


@pytest.mark.parametrize("setting_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_setting_is_404_everywhere(client: TestClient, setting_id: str) -> None:
    path = f"{SETTINGS}/{setting_id}"
    await problem(await client.get(path), 404)
    await problem(await client.patch(path, json={"name": "x"}), 404)
    await problem(await client.delete(path), 404)


BAD = [
    ({"provider": "gemini"}, "provider"),
    ({"provider": None}, "provider"),
    ({"name": ""}, "name"),
    ({"name": "has space"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ".."}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "ok\n"}, "name"),
    ({"name": 5}, "name"),
    ({"setting": {"apikey": "k", "apiKey": "k"}}, "setting"),
    ({"setting": {"apikey": "k", "url": "http://h"}}, "setting"),
    ({"setting": {}}, "setting"),
    ({"setting": {"apikey": ""}}, "setting"),
    ({"setting": {"apikey": "has space"}}, "setting"),
    ({"setting": "sk"}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "ftp://h/v1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https:///v1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https://u:p@h/v1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https://h/v1?x=1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https://h:99999/v1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https://[::1/v1"}}, "setting"),
    ({"setting": {"apikey": "k", "baseUrl": "https://h /v1"}}, "setting"),
    ({"provider": "vllm", "setting": {}}, "setting"),
    ({"provider": "openai_compatible", "setting": {"apikey": "k"}}, "setting"),
    ({"provider": "azure", "setting": {"apikey": "k"}}, "setting"),
    ({"provider": "azure", "setting": {"apikey": "k", "resourceName": "r",
                                       "endpoint": "https://r.openai.azure.com"}}, "setting"),
    ({"provider": "azure", "setting": {"apikey": "k", "resourceName": "evil.com/x"}}, "setting"),
    ({"provider": "deepinfra", "setting": {"apikey": "k", "baseUrl": "https://h"}}, "setting"),
    ({"allowedModels": "gpt-4o"}, "allowedModels"),
    ({"allowedModels": [""]}, "allowedModels"),
    ({"costMap": {"promptCost": {}}}, "costMap"),
    ({"costMap": {"promptCostPerModel": {"m": -1}}}, "costMap"),
    ({"costMap": {"promptCostPerModel": {"m": "nan"}}}, "costMap"),
    ({"costMap": {"promptCostPerModel": []}}, "costMap"),
    ({"secret": "x"}, "secret"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field"), BAD)
async def test_bad_settings_are_400_naming_the_field(
    client: TestClient, fields: dict[str, Any], field: str
) -> None:
    body = new_setting(**fields)
    response = await client.put(SETTINGS, json=body)
    detail = await problem(response, 400)
    assert field in detail
    clear = body.get("setting", {})
    if isinstance(clear, dict) and clear.get("apikey"):
        assert clear["apikey"] not in await response.text() or len(clear["apikey"]) < 3


async def test_the_message_says_what_a_provider_requires(client: TestClient) -> None:
    response = await client.put(SETTINGS, json=new_setting("vllm", setting={}))
    assert (await problem(response, 400)) == {"setting": {"url": ["required for a vllm setting"]}}
    response = await client.put(
        SETTINGS, json=new_setting(setting={"apikey": "k", "url": "http://h"})
    )
    assert (await problem(response, 400)) == {
        "setting": {"url": ["not a field of a openai setting"]}
    }


async def test_urls_are_kept_without_a_trailing_slash(client: TestClient) -> None:
    created = await create(client, setting={"apikey": "k", "baseUrl": "https://h.example/v1/"})
    assert created["setting"]["baseUrl"] == "https://h.example/v1"


async def test_names_are_unique_among_live_settings(client: TestClient) -> None:
    first = await create(client)
    response = await client.put(SETTINGS, json=new_setting(name=first["name"]))
    assert "unique" in await problem(response, 409)
    other = await create(client)
    response = await client.patch(f"{SETTINGS}/{other['id']}", json={"name": first["name"]})
    await problem(response, 409)
    assert (await client.delete(f"{SETTINGS}/{first['id']}")).status == 204
    await create(client, name=first["name"])  # a deleted setting's name is free again


async def test_patch_merges_the_setting_field_by_field(client: TestClient, db: Any) -> None:
    created = await create(
        client, setting={"apikey": secret(), "baseUrl": "https://a.example/v1", "project": "p"}
    )
    path = f"{SETTINGS}/{created['id']}"
    sealed = await db.fetchval("SELECT secret FROM provider_settings WHERE setting_id = $1",
                               created["id"])  # fmt: skip
    response = await client.patch(
        path, json={"setting": {"baseUrl": "https://b.example/v1", "project": None},
                    "allowedModels": ["gpt-4o"], "costMap": {"promptCostPerModel": {"m": 0.5}}},
    )  # fmt: skip
    patched = await response.json()
    assert response.status == 200, patched
    assert patched["setting"] == {"apikey": created["setting"]["apikey"],
                                  "baseUrl": "https://b.example/v1"}  # fmt: skip
    assert patched["allowedModels"] == ["gpt-4o"]
    assert patched["costMap"]["promptCostPerModel"] == {"m": 0.5}
    assert patched["updatedAt"] >= created["updatedAt"]
    assert await db.fetchval("SELECT secret FROM provider_settings WHERE setting_id = $1",
                             created["id"]) == sealed  # fmt: skip

    clear = secret()
    patched = await (await client.patch(path, json={"setting": {"apikey": clear}})).json()
    assert patched["setting"]["apikey"] == "****" + clear[-4:]
    row = await db.fetchval("SELECT secret FROM provider_settings WHERE setting_id = $1",
                            created["id"])  # fmt: skip
    assert SecretBox(TEST_ENCRYPTION_KEY).decrypt(row, created["id"]) == clear
    assert await (await client.get(path)).json() == patched


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"setting": {"apikey": None}}, "setting"),  # openai requires one
        ({"setting": {"url": "http://h"}}, "setting"),
        ({"setting": {"nope": "x"}}, "setting"),
        ({"provider": "anthropic"}, "provider"),
        ({"provider": "nope"}, "provider"),
        ({"name": "bad name"}, "name"),
        ({"id": "x"}, "id"),
    ],
)
async def test_bad_patches_are_400(client: TestClient, body: dict[str, Any], field: str) -> None:
    created = await create(client)
    response = await client.patch(f"{SETTINGS}/{created['id']}", json=body)
    assert field in await problem(response, 400)
    assert await (await client.get(f"{SETTINGS}/{created['id']}")).json() == created


async def test_azure_switches_from_resource_name_to_endpoint(client: TestClient) -> None:
    created = await create(client, provider="azure", setting={"apikey": "k", "resourceName": "r"})
    path = f"{SETTINGS}/{created['id']}"
    response = await client.patch(path, json={"setting": {"endpoint": "https://e.example"}})
    await problem(response, 400)  # both at once
    response = await client.patch(
        path, json={"setting": {"endpoint": "https://e.example", "resourceName": None}}
    )
    assert (await response.json())["setting"] == {"apikey": "****", "endpoint": "https://e.example"}


async def test_without_the_encryption_key_a_secret_is_503(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(replace(settings, settings_encryption_key=b"")))
    response = await client.put(SETTINGS, json=new_setting())
    assert "SETTINGS_ENCRYPTION_KEY" in await problem(response, 503)
    keyless = await create(client, provider="vllm", setting={"url": "http://vllm:8000"})
    response = await client.patch(f"{SETTINGS}/{keyless['id']}", json={"setting": {"apikey": "t"}})
    await problem(response, 503)
    response = await client.patch(f"{SETTINGS}/{keyless['id']}", json={"name": "renamed-ok"})
    assert response.status == 200


async def test_delete_is_refused_while_a_key_uses_the_setting(client: TestClient) -> None:
    setting = await create(client)
    path = f"{SETTINGS}/{setting['id']}"
    response = await client.put(KEYS, json=new_key(settingId=setting["id"]))
    key = await response.json()
    detail = await problem(await client.delete(path), 409)
    assert key["keyId"] in detail
    await client.patch(f"{KEYS}/{key['keyId']}", json={"settingIds": []})
    assert (await client.delete(path)).status == 204
    await problem(await client.get(path), 404)
    await problem(await client.delete(path), 404)


async def test_a_deleted_key_does_not_hold_its_settings(client: TestClient) -> None:
    setting = await create(client)
    response = await client.put(KEYS, json=new_key(settingIds=[setting["id"]]))
    await client.delete(f"{KEYS}/{(await response.json())['keyId']}")
    assert (await client.delete(f"{SETTINGS}/{setting['id']}")).status == 204


async def test_keys_name_their_settings(client: TestClient) -> None:
    first, second = await create(client), await create(client, provider="deepinfra")
    response = await client.put(
        KEYS, json=new_key(settingIds=[first["id"], second["id"]], rotationEnabled=True)
    )
    key = await response.json()
    assert response.status == 200, key
    assert key["settingIds"] == [first["id"], second["id"]]
    assert key["settingId"] == first["id"]
    assert key["rotationEnabled"] is True
    path = f"{KEYS}/{key['keyId']}"
    assert await (await client.get(path)).json() == key
    patched = await (await client.patch(path, json={"settingId": second["id"]})).json()
    assert (patched["settingId"], patched["settingIds"]) == (second["id"], [second["id"]])
    assert patched["rotationEnabled"] is True
    patched = await (await client.patch(path, json={"settingId": None})).json()
    assert (patched["settingId"], patched["settingIds"], patched["rotationEnabled"]) == (
        "",
        [],
        True,
    )
    plain = await (await client.put(KEYS, json=new_key())).json()
    assert (plain["settingId"], plain["settingIds"], plain["rotationEnabled"]) == ("", [], False)
    listed = await (await client.get(KEYS, params={"keyIds": key["keyId"]})).json()
    assert listed[0]["settingIds"] == []


async def test_bad_setting_references_on_keys_are_400(client: TestClient) -> None:
    setting = await create(client)
    unknown = str(uuid.uuid4())
    deleted = await create(client)
    await client.delete(f"{SETTINGS}/{deleted['id']}")
    key = await (await client.put(KEYS, json=new_key())).json()
    for body, needle in [
        ({"settingId": unknown}, unknown),
        ({"settingIds": [setting["id"], unknown]}, unknown),
        ({"settingIds": [deleted["id"]]}, deleted["id"]),
        ({"settingId": setting["id"], "settingIds": [setting["id"]]}, "settingId"),
        ({"settingId": "nope"}, "settingId"),
        ({"settingIds": "nope"}, "settingIds"),
        ({"settingIds": [None]}, "settingIds"),
        ({"rotationEnabled": "true"}, "rotationEnabled"),
        ({"rotationEnabled": 1}, "rotationEnabled"),
    ]:
        detail = await problem(await client.put(KEYS, json=new_key(**body)), 400)
        assert needle in str(detail), (body, detail)
        response = await client.patch(f"{KEYS}/{key['keyId']}", json=body)
        assert needle in str(await problem(response, 400)), body
    assert await (await client.get(f"{KEYS}/{key['keyId']}")).json() == key


def every_log_field(caplog: pytest.LogCaptureFixture) -> str:
    """Each record's message and every attribute, extras included, as a JSON log line has them."""
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def pg_dump() -> str:
    # The newest installed: pg_dump refuses a server newer than itself.
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_dump"), key=_version)
    path = found[-1] if found else shutil.which("pg_dump")
    if path is None:
        pytest.skip("no pg_dump on this machine")
    return path


def _version(path: str) -> int:
    return int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0


async def test_secrets_are_in_no_log_line_nor_database_dump(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clears = [secret() for _ in range(3)]
    created = await create(client, setting={"apikey": clears[0]})
    await client.patch(f"{SETTINGS}/{created['id']}", json={"setting": {"apikey": clears[1]}})
    await client.put(
        SETTINGS, json=new_setting(name=created["name"], setting={"apikey": clears[2]})
    )
    await client.put(SETTINGS, json=new_setting(setting={"apikey": clears[2] + " "}))
    pg = settings.postgres
    dump = subprocess.run(  # noqa: ASYNC221  (the server under test waits meanwhile, harmlessly)
        [pg_dump(), "-h", pg.hosts[0], "-p", str(pg.port), "-U", pg.username, "--data-only",
         pg.db_name],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert created["id"] in dump  # the dump holds the settings
    logged = every_log_field(caplog)
    assert created["id"] in logged  # the write was logged at all: the search can fail
    for clear in clears:
        assert clear not in logged
        assert clear not in dump
