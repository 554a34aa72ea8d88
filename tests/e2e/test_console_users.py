"""The console's users page in a real headless Chromium: a user's spend against its limits, then
create (a half-given limit first), edit, search and delete."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.browser import Browser, browser
from tests.e2e.conftest import Gateway, Start
from tests.e2e.test_console import assert_clean, network_refusals
from tests.e2e.test_console_routes import row_button, row_text
from tests.e2e.test_users import CHAT_COST, chat, create_user, pricing_file, user_spend

__all__ = ["browser", "pricing_file"]

USERS = "/api/users"


def users_scenario(page: Browser, url: str, spender: str, new: str, key_id: str) -> None:
    page.open(url)
    page.wait_text("main h1", lambda t: t == "Users")
    row = row_text(page, "table.users", spender)
    assert f"${CHAT_COST:.4f} · no limit" in row and "1 / 10" in row  # from /api/reporting/users

    page.button("New user").click()
    page.find("dialog form.user-form")
    page.fill("dialog input[name=userId]", new)
    page.fill("dialog input[name=name]", "Jane Roe")
    page.fill("dialog input[name=tags]", "team-a")
    page.fill("dialog input[name=keyIds]", key_id)
    page.fill("dialog input[name=rateLimitOverTime]", "30")
    page.fill("dialog input[name=allowedModels]", "gpt-4o-mini")
    page.button("Create user", "dialog").click()
    assert "together" in page.wait_text("#f-rateLimitUnit-error", bool)
    assert page.find("#f-rateLimitUnit").get_attribute("aria-invalid") == "true"
    assert network_refusals(page.errors(), 400)
    page.find("dialog select[name=rateLimitUnit] option[value=m]").click()
    page.button("Create user", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    row = row_text(page, "table.users", new)
    assert "Jane Roe" in row and "team-a" in row and "0 / 30" in row
    page.screenshot("users")

    row_button(page, "table.users", new, "Edit")
    assert page.find("dialog input[name=keyIds]").get_attribute("value") == key_id
    assert page.find("dialog input[name=allowedModels]").get_attribute("value") == "gpt-4o-mini"
    page.fill("dialog input[name=name]", "Jane Q. Roe")
    page.fill(
        "dialog textarea[name=allowedPaths]", "POST /api/providers/openai/v1/chat/completions"
    )
    page.find("dialog input[name=revoked]").click()
    page.button("Save", "dialog").click()
    page.wait(lambda: not page.all("dialog"))
    page.wait_text("table.users tbody", lambda t: "Jane Q. Roe" in t and "revoked" in t)

    page.fill("main input[name=searchUserId]", new)
    page.after(lambda: page.button("Search", "main").click())
    assert spender not in page.wait_text("table.users tbody", lambda t: new in t)
    row_button(page, "table.users", new, "Delete")
    page.button("Delete", "dialog").click()
    page.wait_text("table.users tbody", lambda t: "No users match" in t)
    assert_clean(page, "users")


@pytest.fixture
async def priced_one(start_gateway: Start, pricing_file: str) -> Gateway:
    return await start_gateway(pricing_file=pricing_file)


async def test_console_users(priced_one: Gateway, browser: Browser) -> None:
    gateway = priced_one
    raw, key = await gateway.create_key(costLimitInUsd=100)
    spender = f"spender-{uuid.uuid4().hex[:6]}"
    spending = await create_user(
        gateway, userId=spender, keyIds=[key["keyId"]], rateLimitOverTime=10, rateLimitUnit="h"
    )
    await chat(gateway.client(raw), spender)
    await user_spend(gateway, spending["id"], CHAT_COST)
    new = f"user-{uuid.uuid4().hex[:6]}"
    url = str(gateway.keymgmt.make_url("/ui/#/users"))
    await asyncio.to_thread(users_scenario, browser, url, spender, new, key["keyId"])

    found = await (
        await gateway.keymgmt.get(USERS, params=[("userIds", spender), ("userIds", new)])
    ).json()
    assert [u["userId"] for u in found] == [spender]
