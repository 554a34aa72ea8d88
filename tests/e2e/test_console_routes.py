"""The console's routes page in a real headless Chromium: create (steps that are no JSON, a step
the API refuses, a path another route has), edit, delete."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING

from tests.e2e.browser import Browser, browser
from tests.e2e.conftest import KEYS, Gateway
from tests.e2e.test_console import assert_clean, network_refusals

if TYPE_CHECKING:
    from selenium.webdriver.remote.webelement import WebElement

__all__ = ["browser"]

ROUTES = "/api/routes"
FORM_ERROR = "dialog form.route-form > p.field-error"


def row_button(page: Browser, table: str, starts: str, label: str) -> None:
    """Clicks the button labelled `label` in the row of `table` whose text starts with `starts`,
    once the table shows that row."""

    def found() -> WebElement | None:
        buttons = [
            b
            for tr in page.all(f"{table} tbody tr")
            if tr.text.startswith(starts)
            for b in tr.find_elements("css selector", "button")
            if b.text == label
        ]
        assert len(buttons) < 2, f"more than one row of {table} starts with {starts!r}"
        return buttons[0] if buttons else None

    page.wait(found).click()


def row_text(page: Browser, table: str, starts: str) -> str:
    """The text of the row of `table` whose text starts with `starts`, once there is one."""
    return page.wait(
        lambda: next(
            (tr.text for tr in page.all(f"{table} tbody tr") if tr.text.startswith(starts)), None
        )
    )


def routes_scenario(page: Browser, url: str, name: str, key_id: str, taken: str) -> None:
    page.open(url)
    page.wait_text("main h1", lambda t: t == "Routes")
    page.wait_text("table.routes tbody", lambda t: taken in t)
    page.button("New route").click()
    page.find("dialog form.route-form")
    page.fill("dialog input[name=name]", name)
    page.fill("dialog input[name=path]", taken)
    page.fill("dialog input[name=keyIds]", key_id)
    page.fill("dialog textarea[name=steps]", '[{"provider": "openai",')
    page.button("Create route", "dialog").click()
    assert "not JSON" in page.wait_text("#f-steps-error", bool)
    assert page.find("#f-steps").get_attribute("aria-invalid") == "true"
    assert_clean(page, "steps that are no JSON")  # refused before any call

    page.fill("dialog textarea[name=steps]", '[{"provider": "openai", "retries": 2}]')
    page.button("Create route", "dialog").click()
    assert "[0].model" in page.wait_text("#f-steps-error", lambda t: "model" in t)
    assert network_refusals(page.errors(), 400)

    steps = [
        {"provider": "openai", "model": "gpt-4o-mini", "retries": 2},
        {"provider": "openai", "model": "gpt-4o", "timeout": "30s"},
    ]
    page.fill("dialog textarea[name=steps]", json.dumps(steps))
    page.button("Create route", "dialog").click()
    assert "path exists" in page.wait_text(FORM_ERROR, bool)
    assert page.text("#f-steps-error") == ""
    assert network_refusals(page.errors(), 409)

    path = f"/console-{uuid.uuid4().hex[:6]}/chat/completions"
    page.fill("dialog input[name=path]", path)
    page.button("Create route", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    row = row_text(page, "table.routes", name)
    assert path in row and "openai gpt-4o-mini" in row and row.count("openai gpt-4o") == 2
    page.screenshot("routes")

    row_button(page, "table.routes", name, "Edit")
    assert '"30s"' in str(page.find("dialog textarea[name=steps]").get_attribute("value"))
    assert page.find("dialog input[name=keyIds]").get_attribute("value") == key_id
    page.find("dialog select[name=retryStrategy] option[value=exponential]").click()
    page.find("dialog input[name='cacheConfig.enabled']").click()
    page.fill("dialog input[name='cacheConfig.ttl']", "10m")
    page.fill("dialog input[name='coolDown.failures']", "5")
    page.button("Save", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    page.wait(lambda: "exponential" in row_text(page, "table.routes", name))
    assert "on, 10m" in row_text(page, "table.routes", name)

    row_button(page, "table.routes", name, "Delete")
    page.button("Delete", "dialog").click()
    page.wait_text("table.routes tbody", lambda t: path not in t and taken in t)
    assert_clean(page, "routes")


async def test_console_routes(gateway: Gateway, browser: Browser) -> None:
    response = await gateway.keymgmt.put(KEYS, json={"name": "caller", "key": uuid.uuid4().hex})
    key = await response.json()
    assert response.status == 200, key
    taken = f"/taken-{uuid.uuid4().hex[:6]}/chat/completions"
    steps = [{"provider": "openai", "model": "gpt-4o-mini"}]
    response = await gateway.keymgmt.post(
        ROUTES, json={"name": "holds the path", "path": taken, "steps": steps}
    )
    assert response.status == 200, await response.text()
    name = f"console route {uuid.uuid4().hex[:6]}"
    url = str(gateway.keymgmt.make_url("/ui/#/routes"))
    await asyncio.to_thread(routes_scenario, browser, url, name, key["keyId"], taken)

    remaining = {r["name"] for r in await (await gateway.keymgmt.get(ROUTES)).json()}
    assert "holds the path" in remaining and name not in remaining
