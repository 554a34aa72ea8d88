"""Typed application keys of keymgmt."""

from typing import Any

from aiohttp import web

from keymgmt.store import KeyStore
from shared.config import Settings
from shared.limits import LimitEngine

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", KeyStore)
OPENAPI = web.AppKey("openapi", dict[str, Any])
LIMITS = web.AppKey("limits", LimitEngine)
