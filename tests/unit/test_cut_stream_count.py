"""A stream cut short is billed from a count; a client leaving during the count must not void it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from proxy.forward import take_stream_usage
from proxy.metering import Usage


class SlowCount:
    """A meter whose count waits until released, as tiktoken does while its encodings load."""

    usage = None
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def usage_when_cut(self, prompt_tokens: Callable[[], int]) -> Usage:
        self.started.set()
        self.release.wait(5)
        return Usage(prompt_tokens(), 7)


async def test_a_client_leaving_during_the_count_still_leaves_the_usage_on_the_call() -> None:
    meter = SlowCount()
    call = SimpleNamespace(usage=None, prompt_tokens_estimate=lambda: 12)
    handler = asyncio.ensure_future(take_stream_usage(meter, call))  # type: ignore[arg-type]
    await asyncio.to_thread(meter.started.wait, 5)
    handler.cancel()  # the client left: aiohttp cancels the handler
    await asyncio.sleep(0.05)
    assert not handler.done()  # still counting, not abandoned
    meter.release.set()
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert call.usage == Usage(12, 7)


async def test_without_a_cancellation_the_count_is_the_calls_usage() -> None:
    meter = SlowCount()
    meter.release.set()
    call = SimpleNamespace(usage=None, prompt_tokens_estimate=lambda: 3)
    await take_stream_usage(meter, call)  # type: ignore[arg-type]
    assert call.usage == Usage(3, 7)


async def test_usage_the_stream_reported_is_taken_without_a_count() -> None:
    meter = SlowCount()  # never released: a count would wait its 5 s out
    meter.usage = Usage(9, 4)  # type: ignore[assignment]
    call = SimpleNamespace(usage=None, prompt_tokens_estimate=lambda: 3)
    await asyncio.wait_for(take_stream_usage(meter, call), 1)  # type: ignore[arg-type]
    assert call.usage == Usage(9, 4)
