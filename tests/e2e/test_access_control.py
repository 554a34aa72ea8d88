"""allowedPaths and allowedModels at the proxy: a 403 before admission, on any replica."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import PROXY_PATH, Gateway, Start

CHAT = f"{PROXY_PATH}/chat/completions"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def two(start_gateway: Start) -> Gateway:
    return await start_gateway(replicas=2)


async def test_paths_and_models_outside_the_key_are_403_and_cost_nothing(two: Gateway) -> None:
    raw, key = await two.create_key(
        allowedPaths=[{"path": CHAT, "method": "POST"}],
        allowedModels=["gpt-4o-mini"],
        rateLimitOverTime=1,
        rateLimitUnit="m",
    )
    for replica in (0, 1):
        client = two.client(raw, replica)
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.embeddings.create(model="gpt-4o-mini", input="hi")
        assert raised.value.code == "path_not_allowed"
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.models.list()
        assert raised.value.code == "path_not_allowed"
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert raised.value.code == "model_not_allowed"
    assert two.upstream.recorded == []
    # The refusals took nothing of the rate limit of 1 a minute: this call is its first.
    answer = await two.client(raw, 1).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert answer.choices[0].message.content
    assert (await two.spend(key["keyId"]))["requestsInWindow"] == 1


async def test_a_patch_of_the_rules_reaches_every_replica(two: Gateway) -> None:
    raw, key = await two.create_key(allowedModels=["gpt-4o"])
    with pytest.raises(openai.PermissionDeniedError):
        await two.client(raw, 0).chat.completions.create(model="gpt-4o-mini", messages=HI)
    response = await two.keymgmt.patch(
        f"/api/key-management/keys/{key['keyId']}", json={"allowedModels": ["gpt-4o-mini"]}
    )
    assert response.status == 200
    for replica in (0, 1):
        client = two.client(raw, replica)
        for _ in range(100):
            try:
                await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
                break
            except openai.PermissionDeniedError:
                await two.wait_for_refresh()
        else:
            pytest.fail("the patched rules never arrived")


async def test_an_unreadable_body_on_a_metered_endpoint_is_400_not_a_free_pass(
    two: Gateway,
) -> None:
    raw, key = await two.create_key(
        costLimitInUsd=1, rateLimitOverTime=1, rateLimitUnit="m", allowedModels=["gpt-4o-mini"]
    )
    session = two.keymgmt.session
    headers = {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"}
    for body in (b"{oops", b"[1]", b'"text"', b""):
        async with session.post(
            str(two.proxies[0].make_url(CHAT)), data=body, headers=headers
        ) as response:
            assert response.status == 400, body
            assert (await response.json())["error"]["code"] == "invalid_json"
    assert two.upstream.recorded == []
    assert (await two.spend(key["keyId"]))["requestsInWindow"] == 0
