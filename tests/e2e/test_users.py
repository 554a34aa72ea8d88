"""End users at the proxy: matched by `user` and the key's ids or tags, their limits held beside
the key's in the same admission, on two replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from proxy.typedefs import LIMITS, USERS
from proxy.users import UserSnapshot
from shared.redispipe import Pipe
from tests.e2e.conftest import Gateway, write_pricing
from tests.e2e.test_anthropic import SECRET, client_of, upstream_root
from tests.e2e.test_providers import create_setting

MODEL = "priced-model"
INPUT, OUTPUT = 1e-4, 1e-3
MESSAGES = [{"role": "user", "content": "hello there friend"}]
CHAT_COST = 6 * INPUT + 5 * OUTPUT  # what the fake upstream reports for MESSAGES


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}}
    )


async def create_user(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    """A new user, once every replica holds it."""
    response = await gateway.keymgmt.post("/api/users", json=fields)
    user = await response.json()
    assert response.status == 200, user
    await until_every_replica(gateway, lambda users: users.by_id(user["id"]))
    return user  # type: ignore[no-any-return]


async def until_every_replica(gateway: Gateway, holds: Callable[[UserSnapshot], Any]) -> None:
    async with asyncio.timeout(10):
        while True:
            if all(holds(proxy.app[USERS]) for proxy in gateway.proxies):
                return
            await asyncio.sleep(0.005)


async def chat(client: openai.AsyncOpenAI, user: str, **options: Any) -> Any:
    return await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, user=user, **options
    )


async def user_spend(gateway: Gateway, record_id: str, expected: float) -> float:
    async with asyncio.timeout(5):
        while True:
            response = await gateway.keymgmt.get(f"/api/reporting/users/{record_id}")
            assert response.status == 200, await response.text()
            spent = float((await response.json())["costInUsd"])
            if spent >= expected - 1e-12:
                return spent
            await asyncio.sleep(0.02)


async def test_a_users_spent_budget_refuses_that_user_and_serves_another(
    priced: Gateway,
) -> None:
    tag = uuid.uuid4().hex
    raw, key = await priced.create_key(costLimitInUsd=100, tags=[tag])
    alice = await create_user(priced, userId="alice", keyIds=[key["keyId"]],
                              costLimitInUsd=CHAT_COST / 2)  # fmt: skip
    bob = await create_user(priced, userId="bob", tags=[tag], costLimitInUsd=1)
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    await chat(clients[0], "alice")  # spends past half its cost: its own reservation need not fit
    assert await user_spend(priced, alice["id"], CHAT_COST) == pytest.approx(CHAT_COST)
    for client in clients:
        with pytest.raises(openai.RateLimitError) as raised:
            await chat(client, "alice")
        assert raised.value.code == "insufficient_quota"
        assert "user's cost limit" in raised.value.message
        assert raised.value.response.headers["x-should-retry"] == "false"
        await chat(client, "bob")  # the same key, another user: served
        await chat(client, "carol")  # no such user: the key's limits alone
    assert await user_spend(priced, bob["id"], 2 * CHAT_COST) == pytest.approx(2 * CHAT_COST)
    assert await priced.settled_cost(key["keyId"], 5 * CHAT_COST) == pytest.approx(5 * CHAT_COST)


async def test_a_users_rate_limit_and_rules_hold_on_both_replicas(priced: Gateway) -> None:
    raw, key = await priced.create_key()
    await create_user(priced, userId="dave", keyIds=[key["keyId"]], rateLimitOverTime=2,
                      rateLimitUnit="m", allowedModels=[MODEL])  # fmt: skip
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await clients[0].chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, user="dave"
        )
    assert raised.value.code == "model_not_allowed"
    outcomes = await asyncio.gather(
        *(chat(clients[i % 2], "dave") for i in range(6)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(refused) == 4
    assert "for this user" in refused[0].message
    await clients[1].chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # no user


async def test_a_revoked_or_expired_user_is_refused(priced: Gateway) -> None:
    raw, key = await priced.create_key()
    erin = await create_user(priced, userId="erin", keyIds=[key["keyId"]])
    await create_user(priced, userId="frank", keyIds=[key["keyId"]], ttl="1s")
    client = priced.client(raw, 1)
    await chat(client, "erin")
    response = await priced.keymgmt.patch(f"/api/users/{erin['id']}", json={"revoked": True})
    assert response.status == 200
    await until_every_replica(priced, lambda users: users.by_id(erin["id"]).revoked)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await chat(client, "erin")
    assert raised.value.code == "user_revoked"
    await asyncio.sleep(2.1)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await chat(client, "frank")
    assert raised.value.code == "user_expired"


async def test_a_users_allowed_paths_hold_on_both_replicas_and_anthropic_names_its_user(
    priced: Gateway,
) -> None:
    raw, key = await priced.create_key()
    chat_path = "/api/providers/openai/v1/chat/completions"
    await create_user(priced, userId="gina", keyIds=[key["keyId"]],
                      allowedPaths=[{"path": chat_path, "method": "POST"}])  # fmt: skip
    for replica in (0, 1):
        client = priced.client(raw, replica)
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.embeddings.create(model=MODEL, input="hi", user="gina")
        assert raised.value.code == "path_not_allowed" and "user" in raised.value.message
        await chat(client, "gina")  # the path it lists
        await client.embeddings.create(model=MODEL, input="hi", user="other")  # no such user
    # On the anthropic path the user is the body's metadata.user_id.
    setting = await create_setting(
        priced, "anthropic", {"apikey": SECRET, "baseUrl": upstream_root(priced)}
    )
    anthropic_raw, anthropic_config = await priced.create_key(settingIds=[setting["id"]])
    await create_user(priced, userId="hank", keyIds=[anthropic_config["keyId"]],
                      allowedModels=["claude-3-5-haiku-latest"])  # fmt: skip
    for replica in (0, 1):
        async with client_of(priced, anthropic_raw, replica) as client:
            with pytest.raises(anthropic.PermissionDeniedError) as refused:
                await client.messages.create(
                    model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES,
                    metadata={"user_id": "hank"},
                )  # fmt: skip
            body: Any = refused.value.body
            assert body["error"]["type"] == "permission_error"
            assert "user" in body["error"]["message"]
            await client.messages.create(  # no user named: the key's rules alone
                model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES
            )


async def test_two_windows_and_a_user_are_admitted_in_one_round_trip(
    priced: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, key = await priced.create_key(
        rateLimitOverTime=100, rateLimitUnit="m", rateLimits=[{"overTime": 50, "unit": "s"}],
        costLimitInUsd=5,
    )  # fmt: skip
    await create_user(priced, userId="ivy", keyIds=[key["keyId"]], rateLimitOverTime=100,
                      rateLimitUnit="m", costLimitInUsd=1)  # fmt: skip
    client = priced.client(raw)
    await chat(client, "ivy")  # loads the scripts
    await asyncio.sleep(0.2)
    round_trips = 0
    proxy_pipe = priced.proxies[0].app[LIMITS].redis
    pipe_class = type(proxy_pipe)
    replies = pipe_class.replies

    async def counting(self: Pipe, commands: Any) -> list[Any]:
        nonlocal round_trips
        if self is proxy_pipe:
            round_trips += 1
        return await replies(self, commands)

    monkeypatch.setattr(pipe_class, "replies", counting)
    await chat(client, "ivy")
    await asyncio.sleep(0.3)  # the settlement is flushed in the background
    assert round_trips == 2 + bool(priced.settings.redis.wait_replicas)  # admit, settle
