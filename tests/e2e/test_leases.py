"""Leases through the proxy: two replicas, the real openai SDK, calls many at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from proxy.lease import Lease
from shared.admissions import Admission
from tests.e2e.conftest import Gateway, write_pricing
from tests.e2e.test_limits_and_cost import CHAT_COST, COMPLETION_TOKENS, INPUT, MODEL, OUTPUT, chat


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write_pricing(
        tmp_path, {MODEL: {"input_cost_per_token": INPUT, "output_cost_per_token": OUTPUT}}
    )


@pytest.fixture
def leased(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many calls were served from a lease, so far."""
    served = [0]
    take = Lease.take

    def counting(self: Lease, reservation_nano: int) -> Admission | None:
        admission = take(self, reservation_nano)
        served[0] += admission is not None
        return admission

    monkeypatch.setattr(Lease, "take", counting)
    return served


async def waves(clients: list[openai.AsyncOpenAI], count: int) -> list[bool]:
    """`count` waves of 40 calls at once over the replicas: which calls were served."""

    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            await chat(client, max_tokens=COMPLETION_TOKENS)
        except openai.RateLimitError:
            return False
        return True

    served: list[bool] = []
    for _ in range(count):
        served += await asyncio.gather(*(one(clients[i % 2]) for i in range(40)))
    return served


async def test_a_rate_limit_holds_exactly_with_leases(priced: Gateway, leased: list[int]) -> None:
    raw, config = await priced.create_key(rateLimitOverTime=400, rateLimitUnit="h")
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    served = sum(await waves(clients, 12))
    assert leased[0] > 0
    assert served <= 400
    await asyncio.sleep(1.1)  # every lease is over: the slots left unused are back
    served += sum(await waves(clients, 1))
    assert served == 400
    spend = await priced.settled_cost(config["keyId"], served * CHAT_COST)
    assert spend == pytest.approx(served * CHAT_COST)


async def test_a_cost_limit_holds_exactly_with_leases(priced: Gateway, leased: list[int]) -> None:
    limit = 400 * CHAT_COST
    raw, config = await priced.create_key(costLimitInUsd=limit)
    clients = [priced.client(raw, replica) for replica in (0, 1)]
    served = sum(await waves(clients, 12))
    assert leased[0] > 0
    spend = await priced.settled_cost(config["keyId"], served * CHAT_COST)
    assert spend == pytest.approx(served * CHAT_COST)  # every call charged, once
    assert spend <= limit + CHAT_COST + 1e-12
    await asyncio.sleep(1.1)  # every lease is over, its budget released
    served += sum(await waves(clients, 2))
    spend = await priced.settled_cost(config["keyId"], served * CHAT_COST)
    assert spend == pytest.approx(served * CHAT_COST)
    # The budget is used up to the limit, never past it by more than the last call.
    assert limit - 1e-12 <= spend <= limit + CHAT_COST + 1e-12
