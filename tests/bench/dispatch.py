"""Micro-benchmark of the proxy's dispatch: `python -m tests.bench.dispatch`.

What aiohttp's `web.Application` (its router with the proxy's resources, the handler chain)
costs a request against the low-level `web.Server` with a dispatch of its own, the handler the
same in both: read the body, answer a small JSON. Server CPU a request (user+system time over a
closed-loop run of the load generator, in a process of its own), the variants taking turns over
the rounds; each figure is the median round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from proxy.providers import ADAPTERS
from shared.runtime import install_uvloop
from tests.bench import loadgen
from tests.bench.procs import PYTHON, Processes, cpu_seconds, free_port, wait_http
from tests.bench.report import medians_table

PATH = "/api/providers/openai/v1/chat/completions"
ANSWER = b'{"id":"x","object":"chat.completion","choices":[]}'


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def not_found(request: web.BaseRequest) -> web.Response:
    return web.Response(status=404)


def application() -> web.Application:
    """The proxy's resources, in its order (proxy/app.py), every one answering alike."""
    app = web.Application()
    for provider in ADAPTERS:
        for path in provider.paths():
            app.router.add_route("*", path, answer)
    app.router.add_post("/api/routes/{route_path:.+}", answer)
    app.router.add_get("/api/health", answer)
    app.router.add_get("/metrics", answer)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


PREFIXES = (
    *(path.split("{", 1)[0] for provider in ADAPTERS for path in provider.paths()),
    "/api/routes/",
)


async def own_dispatch(request: web.BaseRequest) -> web.StreamResponse:
    if request.path.startswith(PREFIXES) or request.path in ("/api/health", "/metrics"):
        return await answer(request)
    return await not_found(request)


async def serve_low_level(port: int) -> None:
    runner = web.ServerRunner(web.Server(own_dispatch, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def serve(variant: str, port: int) -> None:
    install_uvloop()
    if variant == "application":
        web.run_app(application(), host="127.0.0.1", port=port, access_log=None, print=None)
    else:
        asyncio.run(serve_low_level(port))


VARIANTS = ("application", "server")
LABELS = {
    "application": "web.Application, the proxy's router",
    "server": "web.Server, own dispatch",
}


def measure(rounds: int, duration: float) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as logs, Processes(Path(logs)) as processes:
        servers = {}
        for name in VARIANTS:
            port = free_port()
            argv = [PYTHON, "-m", "tests.bench.dispatch", "--serve", name, "--port", str(port)]
            servers[name] = processes.start(name, argv, port)
            wait_http(servers[name], "/api/health", 30)
        for round_ in range(rounds):
            for name in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
                target = loadgen.Target.json(servers[name].url(PATH), {"model": "m"}, {})
                before = cpu_seconds(servers[name].pid)
                served = loadgen.measure("throughput", target, duration=duration, concurrency=50)
                spent = cpu_seconds(servers[name].pid) - before
                figures[name].append(spent / served["requests"] * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="one run, s")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        sys.exit(0)
    figures = {LABELS[name]: values for name, values in measure(args.rounds, args.duration).items()}
    base = LABELS["application"]
    print(medians_table("dispatch", "server CPU a request (µs)", figures, base))


if __name__ == "__main__":
    main()
