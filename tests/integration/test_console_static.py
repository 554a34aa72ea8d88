"""The console's files: served without the pass, with a strict CSP, light, and all present."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from keymgmt.app import create_app
from keymgmt.console import STATIC, load_assets
from shared.config import Settings
from shared.models import ACTIONS, ALL_ENTITIES, ENTITIES
from tests.conftest import with_admin_pass

ROOT = Path(__file__).parents[2]
WEIGHT_LIMIT = 300 * 1024
IMPORT = re.compile(r"""(?:import|from)\s*(?:[\w{}*,\s]+from\s*)?["'](\.[^"']+)["']""")


@pytest.fixture
async def guarded(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(with_admin_pass(settings, "s3cret")))


def assert_locked_down(headers: Any) -> None:
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_console_files_need_no_pass_but_the_api_does(guarded: TestClient) -> None:
    for path in ("/ui/", "/ui/index.html", "/ui/js/main.js", "/ui/console.css"):
        response = await guarded.get(path)
        assert response.status == 200, path
        assert_locked_down(response.headers)
    assert (await guarded.get("/ui/js/main.js")).content_type == "text/javascript"
    missing = await guarded.get("/ui/nothing-here.js")
    assert missing.status == 404
    assert_locked_down(missing.headers)
    assert (await guarded.post("/api/v2/key-management/keys", json={})).status == 401
    moved = await guarded.get("/ui", allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == "/ui/"


async def test_config_says_whether_a_pass_is_needed(
    guarded: TestClient, aiohttp_client: Any, settings: Settings
) -> None:
    assert await (await guarded.get("/ui/config.json")).json() == {"adminPassRequired": True}
    open_app = await aiohttp_client(create_app(settings))
    assert await (await open_app.get("/ui/config.json")).json() == {"adminPassRequired": False}


async def test_the_whole_console_downloads_under_300_kb_compressed(guarded: TestClient) -> None:
    paths = sorted(path for path in load_assets() if path)
    total = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for path in paths:
            url = guarded.make_url(f"/ui/{path}")
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
                assert response.status == 200, path
                total += len(await response.read())
    assert "vendor/uplot/uPlot.esm.js" in paths and "vendor/uplot/LICENSE" in paths
    assert total < WEIGHT_LIMIT, f"{total} bytes compressed"


async def test_an_unchanged_file_is_not_sent_again(guarded: TestClient) -> None:
    first = await guarded.get("/ui/js/main.js")
    again = await guarded.get("/ui/js/main.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


def test_every_module_import_names_a_shipped_file() -> None:
    for module in STATIC.rglob("*.js"):
        if "vendor" in module.parts:
            continue
        for target in IMPORT.findall(module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports {target}"


def test_no_inline_script_or_style_in_the_page() -> None:
    page = (STATIC / "index.html").read_text()
    assert "style=" not in page and "<style" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="js/main.js">']


def test_every_console_file_is_in_the_package_data() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["keymgmt.console"].split(",")
    # Globbed from the package's directory, as setuptools does: * does not cross a /.
    packaged = {path for p in patterns for path in STATIC.parent.glob(p.strip())}
    missing = [
        p.relative_to(STATIC).as_posix()
        for p in STATIC.rglob("*")
        if p.is_file() and p not in packaged
    ]
    assert not missing, f"not in setup.cfg's package data: {missing}"


def js_list(module: str, name: str) -> list[str]:
    source = (STATIC / "js" / module).read_text()
    found = re.search(rf"export const {name} = \[(.*?)\];", source, re.S)
    assert found, f"{module} has no {name}"
    return re.findall(r'"([^"]+)"', found.group(1))


def test_the_policy_form_offers_every_entity_and_action() -> None:
    assert js_list("policyform.js", "ENTITIES") == [*ENTITIES, ALL_ENTITIES]
    assert js_list("policyform.js", "ACTIONS") == list(ACTIONS)
