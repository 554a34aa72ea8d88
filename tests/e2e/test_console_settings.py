"""The console's provider-settings page in a real headless Chromium: create (with a mistake
first), edit, a refused and an accepted delete, a key given a setting; the secret never shown."""

from __future__ import annotations

import asyncio
import uuid

from tests.e2e.browser import Browser, browser
from tests.e2e.conftest import KEYS, Gateway
from tests.e2e.test_console import assert_clean, network_refusals

__all__ = ["browser"]

SETTINGS = "/api/provider-settings"


def settings_scenario(gateway: Gateway, page: Browser, name: str, clear: str, in_use: str) -> None:
    page.open(str(gateway.keymgmt.make_url("/ui/#/settings")))
    page.wait_text("main h1", lambda t: t == "Provider settings")
    page.wait_text("table.settings tbody", lambda t: in_use in t)
    page.button("New setting").click()
    page.find("dialog form.setting-form")
    page.find("dialog select[name=provider] option[value=vllm]").click()
    assert not page.find("dialog input[name=url]").get_attribute("hidden")
    assert not page.find("dialog input[name=organization]").is_displayed()
    page.fill("dialog input[name=name]", name)
    page.fill("dialog input[name=url]", "ftp://vllm.example")
    page.fill("dialog input[name=apikey]", clear)
    page.fill("dialog input[name=allowedModels]", "m1, m2")
    page.fill("dialog input[name=promptCostPerModel]", "m1=0.5")
    page.button("Create setting", "dialog").click()
    assert "http" in page.wait_text("#f-url-error", bool)
    assert page.find("#f-url").get_attribute("aria-invalid") == "true"
    assert network_refusals(page.errors(), 400)
    page.fill("dialog input[name=url]", "http://vllm.example:8000")
    page.button("Create setting", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    row = page.wait_text("table.settings tbody", lambda t: name in t)
    assert "vllm" in row and f"****{clear[-4:]}" in row and "m1" in row
    page.screenshot("provider-settings")

    (edit,) = [
        button
        for tr in page.all("table.settings tbody tr")
        if tr.text.startswith(name)
        for button in tr.find_elements("css selector", "button")
        if button.text == "Edit"
    ]
    edit.click()
    assert page.find("dialog input[name=apikey]").get_attribute("value") == ""
    assert page.find("dialog input[name=promptCostPerModel]").get_attribute("value") == "m1=0.5"
    page.fill("dialog input[name=url]", "http://vllm2.example:8000")
    page.button("Save", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    page.wait_text("table.settings tbody", lambda t: "vllm2.example" in t)
    assert clear not in page.driver.page_source

    def delete(setting: str) -> None:
        (button,) = [
            b
            for tr in page.all("table.settings tbody tr")
            if tr.text.startswith(setting)
            for b in tr.find_elements("css selector", "button")
            if b.text == "Delete"
        ]
        button.click()
        page.button("Delete", "dialog").click()

    delete(in_use)
    page.wait_text("dialog form.confirm .field-error", lambda t: "in use by key" in t)
    assert network_refusals(page.errors(), 409)
    page.button("Cancel", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    assert in_use in page.text("table.settings tbody")
    delete(name)
    page.wait_text("table.settings tbody", lambda t: name not in t)

    page.find("#nav a[href='#/keys']").click()
    page.wait_text("main h1", lambda t: t == "Keys")
    page.button("New key").click()
    page.fill("dialog input[name=name]", "uses a setting")
    page.button("Generate", "dialog").click()
    page.find(
        f"dialog select[name=settingIds] option[value='{gateway_setting_id(page, in_use)}']"
    ).click()
    page.find("dialog input[name=rotationEnabled]").click()
    page.button("Create key", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    assert_clean(page, "provider settings")


def gateway_setting_id(page: Browser, setting_name: str) -> str:
    """The option's value for the setting named, as the key form lists it."""
    for option in page.all("dialog select[name=settingIds] option"):
        if option.text.startswith(setting_name + " ("):
            return str(option.get_attribute("value"))
    raise AssertionError(f"{setting_name} is not offered")


async def test_console_provider_settings(gateway: Gateway, browser: Browser) -> None:
    in_use = f"in-use-{uuid.uuid4().hex[:6]}"
    body = {"provider": "deepinfra", "name": in_use, "setting": {"apikey": "di-0123456789"}}
    response = await gateway.keymgmt.put(SETTINGS, json=body)
    used = await response.json()
    assert response.status == 200, used
    response = await gateway.keymgmt.put(
        KEYS, json={"name": "holder", "key": f"sk-{uuid.uuid4().hex}", "settingId": used["id"]}
    )
    assert response.status == 200
    name, clear = f"vllm-{uuid.uuid4().hex[:6]}", f"sk-console-{uuid.uuid4().hex}"
    await asyncio.to_thread(settings_scenario, gateway, browser, name, clear, in_use)

    found = await gateway.keymgmt.post(
        "/api/v2/key-management/keys", json={"name": "uses a setting"}
    )
    (key,) = (await found.json())["keys"]
    assert key["settingIds"] == [used["id"]] and key["rotationEnabled"] is True
    remaining = {s["name"] for s in await (await gateway.keymgmt.get(SETTINGS)).json()}
    assert in_use in remaining and name not in remaining
