"""Typed application keys of the proxy."""

import aiohttp
from aiohttp import web

from proxy.snapshot import KeySnapshot
from shared.config import Settings

SETTINGS = web.AppKey("settings", Settings)
SNAPSHOT = web.AppKey("snapshot", KeySnapshot)
SESSION = web.AppKey("session", aiohttp.ClientSession)
