"""redis-py's client of one Redis: standalone, or the master the sentinels name. (A cluster is
reached through shared.clusterpipe.)"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from shared.config import RedisSettings


def _tls_options(settings: RedisSettings) -> dict[str, Any]:
    if not settings.tls_enabled:
        return {}
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": settings.tls_ca_file or None,
    }


def create_redis(settings: RedisSettings, max_connections: int = 64) -> redis.Redis:
    # One quick retry covers a connection that went stale across a Redis restart (or a
    # failover); more would make a request wait on a Redis that is really gone.
    options: dict[str, Any] = {
        "db": settings.db,
        "username": settings.username or None,
        "password": settings.password or None,
        "socket_timeout": settings.read_timeout,
        "socket_connect_timeout": settings.read_timeout,
        "retry": Retry(NoBackoff(), 1),
        "max_connections": max_connections,
        "client_name": "gateway",
        **_tls_options(settings),
    }
    if settings.mode == "sentinel":
        sentinel_options = {
            "username": settings.sentinel_username or None,
            "password": settings.sentinel_password or None,
            "socket_timeout": settings.read_timeout,
            "socket_connect_timeout": settings.read_timeout,
            # redis-py's default backs off for seconds on a sentinel that is down: ask the next.
            "retry": Retry(NoBackoff(), 0),
            **_tls_options(settings),
        }
        sentinels = Sentinel(settings.addresses(), sentinel_kwargs=sentinel_options)
        return sentinels.master_for(settings.sentinel_master, **options)
    host, port = settings.addresses()[0]
    return redis.Redis(host=host, port=port, **options)
