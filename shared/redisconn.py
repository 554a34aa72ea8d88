"""The Redis client both services use."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.config import RedisSettings


def create_redis(settings: RedisSettings, max_connections: int = 64) -> redis.Redis:
    # One quick retry covers a connection that went stale across a Redis restart; more would
    # make a request wait on a Redis that is really gone.
    return redis.Redis(
        host=settings.hosts[0],
        port=settings.port,
        db=settings.db,
        password=settings.password or None,
        socket_timeout=settings.read_timeout,
        socket_connect_timeout=settings.read_timeout,
        retry=Retry(NoBackoff(), 1),
        max_connections=max_connections,
        client_name="gateway",
    )
