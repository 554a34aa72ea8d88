"""Typed application keys of the proxy."""

import aiohttp
from aiohttp import web

from proxy.fallback import LocalLimits
from proxy.policies.snapshot import PolicySnapshot
from proxy.provider_settings import SettingSnapshot
from proxy.routes.cache import ResponseCache
from proxy.routes.cooldown import CoolDowns
from proxy.routes.snapshot import RouteSnapshot
from proxy.settlement import Settler
from proxy.snapshot import KeySnapshot
from proxy.targets import Targets
from proxy.telemetry import ProxyMetrics
from proxy.users import UserSnapshot
from shared.config import Settings
from shared.limits import LimitEngine
from shared.logs import HotLog
from shared.metrics import Metrics
from shared.pricing import Pricing

SETTINGS = web.AppKey("settings", Settings)
SNAPSHOT = web.AppKey("snapshot", KeySnapshot)
SESSION = web.AppKey("session", aiohttp.ClientSession)
LIMITS = web.AppKey("limits", LimitEngine)
SETTLER = web.AppKey("settler", Settler)
PRICING = web.AppKey("pricing", Pricing)
METRICS = web.AppKey("metrics", ProxyMetrics)
REGISTRY = web.AppKey("registry", Metrics)
LOCAL_LIMITS = web.AppKey("local_limits", LocalLimits)
CALL_LOG = web.AppKey("call_log", HotLog)
TARGETS = web.AppKey("targets", Targets)
PROVIDER_SETTINGS = web.AppKey("provider_settings", SettingSnapshot)
ROUTES = web.AppKey("routes", RouteSnapshot)  # by path: proxy.routes.snapshot
POLICIES = web.AppKey("policies", PolicySnapshot)
USERS = web.AppKey("users", UserSnapshot)
ROUTE_CACHE = web.AppKey("route_cache", ResponseCache)
COOL_DOWNS = web.AppKey("cool_downs", CoolDowns)
