"""A bare aiohttp pass-through: the floor for any aiohttp proxy, to compare the gateway with.

Every request goes to `--upstream` + its path and query, with its method, body and headers;
the answer streams back as it arrives. One shared ClientSession, uvloop, no access log; with
`--spare-the-collector`, the proxy's collector thresholds too.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from shared.runtime import install_uvloop, spare_the_collector

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)

# Hop-by-hop headers, and the ones the client library sets itself from the URL and body.
REQUEST_DROPPED = frozenset({"host", "connection", "keep-alive", "content-length", "te"})
RESPONSE_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "date", "server"})


async def forward(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in REQUEST_DROPPED}
    body = await request.read()
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM] + request.raw_path,
        data=body or None,
        headers=headers,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers=CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in RESPONSE_DROPPED
            ),
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def session(app: web.Application) -> AsyncIterator[None]:
    # Bytes pass as they are (no decompression), like a proxy should.
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=60)
    app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    yield
    await app[SESSION].close()


def create_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=25 * 1024**2)
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spare-the-collector", action="store_true")
    args = parser.parse_args()
    install_uvloop()
    if args.spare_the_collector:
        spare_the_collector()
    web.run_app(
        create_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
