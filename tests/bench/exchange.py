"""Micro-benchmark of the proxy's upstream exchange: `python -m tests.bench.exchange`.

The client's CPU a call (this process's user+system time over the calls, the fake upstream in a
process of its own) for one `ClientSession.request` of a chat call and the read of its answer,
50 in flight, with the arguments the proxy passes and with leaner ones: no `ClientTimeout` of
its own (the session's applies), the body as a ready `BytesPayload`, the headers as a
`CIMultiDict`. The variants take turns over the rounds; each figure is the median round.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.payload import BytesPayload
from multidict import CIMultiDict
from yarl import URL

from shared.runtime import install_uvloop
from tests.bench.procs import PYTHON, Processes, free_port, wait_http
from tests.bench.report import medians_table

BODY = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 32,
    }
)
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "OpenAI/Python 1.0",
    "X-Stainless-Lang": "python",
    "Authorization": "Bearer sk-upstream",
    "X-Client-Request-Id": "0123456789abcdef",
}
TIMEOUT = 600.0
Variant = Callable[[], dict[str, Any]]
AS_THE_PROXY = "as the proxy calls it"
VARIANTS: dict[str, Variant] = {
    AS_THE_PROXY: lambda: {
        "data": BODY,
        "headers": dict(HEADERS),
        "timeout": aiohttp.ClientTimeout(total=TIMEOUT),
    },
    "the session's timeout": lambda: {"data": BODY, "headers": dict(HEADERS)},
    "and a BytesPayload": lambda: {"data": BytesPayload(BODY), "headers": dict(HEADERS)},
    "and a CIMultiDict": lambda: {"data": BytesPayload(BODY), "headers": CIMultiDict(HEADERS)},
}


async def calls(
    session: aiohttp.ClientSession, url: URL, variant: Variant, count: int, in_flight: int
) -> float:
    """CPU µs a call over `count` calls."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.request("POST", url, allow_redirects=False, **variant()) as answer:
                await answer.read()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (time.process_time() - started) / count * 1e6


async def measure(url: URL, count: int, rounds: int) -> dict[str, list[float]]:
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await calls(session, url, VARIANTS[AS_THE_PROXY], count, 50)  # warm-up
        for round_ in range(rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                figures[name].append(await calls(session, url, VARIANTS[name], count, 50))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as logs, Processes(Path(logs)) as processes:
        argv = [PYTHON, "-m", "tests.bench.upstream", "--port", str(port)]
        upstream = processes.start("upstream", argv, port)
        wait_http(upstream, "/v1/models", 30)
        install_uvloop()
        url = URL(upstream.url("/v1/chat/completions"), encoded=True)
        figures = asyncio.run(measure(url, args.calls, args.rounds))
    print(medians_table("upstream exchange", "client CPU a call (µs)", figures, AS_THE_PROXY))


if __name__ == "__main__":
    main()
