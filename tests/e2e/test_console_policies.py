"""The console's policies page in a real headless Chromium: create (an RE2 pattern the API
refuses, shown under its row), edit, search by tag, a refused and an accepted delete; then a key
given the policy and access rules in the key form."""

from __future__ import annotations

import asyncio
import uuid

from tests.e2e.browser import Browser, browser
from tests.e2e.conftest import KEYS, Gateway
from tests.e2e.test_console import assert_clean, network_refusals
from tests.e2e.test_console_routes import row_button

__all__ = ["browser"]

POLICIES = "/api/policies"
CHAT = "/api/providers/openai/v1/chat/completions"


def pattern(index: int, part: str) -> str:
    return f"dialog [name='regexConfig.rules.{index}.{part}']"


def policies_scenario(page: Browser, url: str, name: str, tag: str, in_use: str) -> None:
    page.open(url)
    page.wait_text("main h1", lambda t: t == "Policies")
    page.wait_text("table.policies tbody", lambda t: in_use in t)
    page.button("New policy").click()
    page.find("dialog form.policy-form")
    page.fill("dialog input[name=name]", name)
    page.fill("dialog input[name=tags]", f"{tag}, pii")
    page.find("dialog select[name='config.rules.email'] option[value=allow_but_redact]").click()
    page.find("dialog select[name='config.rules.ssn'] option[value=block]").click()
    page.button("Add pattern", "dialog").click()
    page.fill(pattern(0, "definition"), r"EMP-\d{6}")
    page.button("Add pattern", "dialog").click()
    page.fill(pattern(1, "definition"), "(unclosed")
    page.find(f"{pattern(1, 'action')} option[value=block]").click()
    page.find("dialog input[name=restore]").click()
    page.button("Create policy", "dialog").click()
    error = page.wait_text("[id='f-regexConfig.rules.1.definition-error']", bool)
    assert "(unclosed" in error
    assert page.text("[id='f-regexConfig.rules.0.definition-error']") == ""
    assert page.find(pattern(1, "definition")).get_attribute("aria-invalid") == "true"
    assert network_refusals(page.errors(), 400)

    page.all("dialog .regex-row")[1].find_element("css selector", "button").click()
    assert len(page.all("dialog .regex-row")) == 1
    page.button("Create policy", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    row = page.wait_text("table.policies tbody", lambda t: name in t)
    assert "email: allow_but_redact" in row and "ssn: block" in row and "EMP-" in row
    page.screenshot("policies")

    row_button(page, "table.policies", name, "Edit")
    assert page.find(pattern(0, "definition")).get_attribute("value") == r"EMP-\d{6}"
    assert page.find("dialog input[name=restore]").is_selected()
    page.find("dialog select[name='config.rules.ssn'] option[value=allow_but_warn]").click()
    page.find("dialog select[name='config.rules.all'] option[value=allow_but_redact]").click()
    page.button("Save", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    page.wait_text("table.policies tbody", lambda t: "ssn: allow_but_warn" in t and "all:" in t)

    page.fill("main input[name=searchTag]", tag)
    page.button("Search", "main").click()
    page.wait_text("table.policies tbody", lambda t: in_use not in t and name in t)
    page.fill("main input[name=searchTag]", "")
    page.button("Search", "main").click()
    page.wait_text("table.policies tbody", lambda t: in_use in t)

    row_button(page, "table.policies", in_use, "Delete")
    page.button("Delete", "dialog").click()
    assert "refer to this policy" in page.wait_text("dialog form.confirm .field-error", bool)
    assert network_refusals(page.errors(), 409)
    page.button("Cancel", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    row_button(page, "table.policies", name, "Delete")
    page.button("Delete", "dialog").click()
    page.wait_text("table.policies tbody", lambda t: name not in t and in_use in t)

    page.find("#nav a[href='#/keys']").click()
    page.wait_text("main h1", lambda t: t == "Keys")
    page.button("New key").click()
    page.fill("dialog input[name=name]", f"guarded {tag}")
    page.button("Generate", "dialog").click()
    (option,) = [o for o in page.all("dialog select[name=policyId] option") if o.text == in_use]
    option.click()
    page.fill(
        "dialog textarea[name=allowedPaths]", f"POST {CHAT}\nGET /api/providers/openai/v1/models"
    )
    page.fill("dialog input[name=allowedModels]", "gpt-4o-mini, gpt-4o")
    page.fill("dialog input[name=rateLimits]", "5/m, 100/x")
    page.find("dialog input[name=shouldLogRequest]").click()
    page.button("Create key", "dialog").click()
    assert "[1].unit" in page.wait_text("#f-rateLimits-error", bool)
    assert network_refusals(page.errors(), 400)
    page.fill("dialog input[name=rateLimits]", "5/m, 100/h")
    page.button("Create key", "dialog").click()
    page.wait(lambda: not page.all("dialog"))

    page.fill("main input[name=searchName]", f"guarded {tag}")
    page.after(lambda: page.button("Search", "main").click())
    row_button(page, "table.keys", f"guarded {tag}", "Edit")
    chosen = page.find("dialog select[name=policyId] option:checked")
    assert chosen.text == in_use
    paths = str(page.find("dialog textarea[name=allowedPaths]").get_attribute("value"))
    assert f"POST {CHAT}" in paths.splitlines()
    assert page.find("dialog input[name=rateLimits]").get_attribute("value") == "5/m, 100/h"
    assert page.find("dialog input[name=shouldLogRequest]").is_selected()
    assert not page.find("dialog input[name=shouldLogResponse]").is_selected()
    page.find("dialog .close").click()
    assert_clean(page, "policies")


async def test_console_policies(gateway: Gateway, browser: Browser) -> None:
    in_use = f"in-use-{uuid.uuid4().hex[:6]}"
    response = await gateway.keymgmt.post(POLICIES, json={"name": in_use, "tags": ["other"]})
    held = await response.json()
    assert response.status == 200, held
    response = await gateway.keymgmt.put(
        KEYS, json={"name": "holder", "key": uuid.uuid4().hex, "policyId": held["id"]}
    )
    assert response.status == 200, await response.text()
    name, tag = f"policy-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:8]
    url = str(gateway.keymgmt.make_url("/ui/#/policies"))
    await asyncio.to_thread(policies_scenario, browser, url, name, tag, in_use)

    remaining = {p["name"] for p in await (await gateway.keymgmt.get(POLICIES)).json()}
    assert in_use in remaining and name not in remaining
    found = await gateway.keymgmt.post(
        "/api/v2/key-management/keys", json={"name": f"guarded {tag}"}
    )
    (key,) = (await found.json())["keys"]
    assert key["policyId"] == held["id"]
    assert key["allowedPaths"] == [
        {"path": "/api/providers/openai/v1/models", "method": "GET"},
        {"path": CHAT, "method": "POST"},
    ]
    assert key["allowedModels"] == ["gpt-4o", "gpt-4o-mini"]
    assert key["rateLimits"] == [{"overTime": 5, "unit": "m"}, {"overTime": 100, "unit": "h"}]
    assert key["shouldLogRequest"] is True and key["shouldLogResponse"] is False
