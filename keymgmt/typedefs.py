"""Typed application keys of keymgmt."""

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from keymgmt.route_store import RouteStore
from keymgmt.settings_store import SettingStore
from keymgmt.slot_batches import KeymgmtRedis
from keymgmt.store import KeyStore
from shared.config import Settings
from shared.limits import LimitEngine
from shared.metrics import Counter, Metrics

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
STORE = web.AppKey("store", KeyStore)
SETTING_STORE = web.AppKey("setting_store", SettingStore)
ROUTE_STORE = web.AppKey("route_store", RouteStore)
OPENAPI = web.AppKey("openapi", dict[str, Any])
LIMITS = web.AppKey("limits", LimitEngine)
REDIS = web.AppKey[KeymgmtRedis]("redis")
REGISTRY = web.AppKey("registry", Metrics)
REQUESTS = web.AppKey("requests", Counter)
EVENTS_WRITTEN = web.AppKey("events_written", Counter)
