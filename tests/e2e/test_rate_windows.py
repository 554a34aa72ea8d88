"""A key's extra rate windows at the proxy: 3 a second and 5 a minute across two replicas."""

from __future__ import annotations

import asyncio
import time

import openai

from tests.e2e.conftest import Start

HI = [{"role": "user", "content": "hi"}]


async def test_two_windows_hold_across_two_replicas(start_gateway: Start) -> None:
    gateway = await start_gateway(replicas=2)
    raw, _ = await gateway.create_key(rateLimits=[{"overTime": 3, "unit": "s"},
                                                  {"overTime": 5, "unit": "m"}])  # fmt: skip
    clients = [gateway.client(raw, replica) for replica in (0, 1)]

    async def call(replica: int) -> tuple[float, float] | openai.RateLimitError:
        """When a served call was sent and answered: it was admitted in between."""
        sent = time.monotonic()
        try:
            await clients[replica].chat.completions.create(model="gpt-4o-mini", messages=HI)
        except openai.RateLimitError as error:
            return error
        return sent, time.monotonic()

    outcomes: list[tuple[float, float] | openai.RateLimitError] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        outcomes += await asyncio.gather(*(call(i % 2) for i in range(4)))
        await asyncio.sleep(0.1)
    served = sorted(t for t in outcomes if isinstance(t, tuple))
    assert len(served) == 5
    # Any four calls were admitted over at least a second: the last of them answered a second or
    # more after the first was sent (answer times alone would count a latency against the limit).
    assert all(max(answered for _, answered in served[n : n + 4]) - served[n][0] >= 1.0
               for n in range(len(served) - 3))  # fmt: skip
    refusals = [e for e in outcomes if isinstance(e, openai.RateLimitError)]
    last = refusals[-1]
    assert last.code == "rate_limit_exceeded"
    assert "5 requests per m" in last.message
    assert 1 <= int(last.response.headers["Retry-After"]) <= 61
