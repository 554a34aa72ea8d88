"""The admin console: static files under /ui/, and the listing endpoints its pages read.

The files are read and gzipped once at start-up; every answer carries a strict
Content-Security-Policy and cannot be framed. The pages call only the admin API, with the
pass the operator signs in with, so serving the files needs no pass.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from keymgmt import eventsearch, keysearch
from keymgmt.typedefs import SETTINGS
from shared.jsonutil import json_response

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    charset: str | None
    etag: str


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
    charset = "utf-8" if content_type.startswith("text/") or path.suffix == ".svg" else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, gzip.compress(body, mtime=0), content_type, charset, etag)


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    """Every file under root by its path relative to /ui/; index.html also answers /ui/."""
    assets = {
        path.relative_to(root).as_posix(): _asset(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
    assets[""] = assets["index.html"]
    return assets


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    return web.Response(
        body=body, content_type=asset.content_type, charset=asset.charset, headers=headers
    )


def add_console(app: web.Application) -> None:
    assets = load_assets()

    async def serve(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["path"])
        if asset is None:
            return web.Response(status=404, text="not found", headers=SECURITY_HEADERS)
        return _answer(request, asset)

    async def config(request: web.Request) -> web.Response:
        # Tells the sign-in page whether to ask for a pass, without a 401 in the browser log.
        required = bool(request.app[SETTINGS].admin_pass)
        return json_response({"adminPassRequired": required}, headers=SECURITY_HEADERS)

    async def to_console(_: web.Request) -> web.Response:
        raise web.HTTPFound(PREFIX)

    app.router.add_get("/ui", to_console)
    app.router.add_get(PREFIX + "config.json", config)
    app.router.add_get(PREFIX + "{path:.*}", serve)
    app.add_routes(keysearch.routes)
    app.add_routes(eventsearch.routes)
