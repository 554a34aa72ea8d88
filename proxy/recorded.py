"""A key's usage as keymgmt recorded it in Postgres: what a replica that never served the key
starts from while Redis is away. Read on that path only, one bounded query per key: the per-key
total (key_spend) and the key's events of its current windows (index on key and time)."""

from __future__ import annotations

import asyncio

from proxy.fallback import RecordedUsage
from shared.config import PostgresSettings
from shared.models import Key
from shared.pg import LazyConnection

QUERY = """
SELECT
  coalesce((SELECT cost_nano FROM key_spend WHERE key_id = $1::uuid), 0),
  (SELECT coalesce(sum(cost_nano), 0) FROM usage_events
   WHERE $2::float8 > 0 AND key_id = $1::uuid
     AND created_at >= now() - make_interval(secs => $2::float8)),
  (SELECT count(*) FROM usage_events
   WHERE $3::float8 > 0 AND key_id = $1::uuid
     AND created_at >= now() - make_interval(secs => $3::float8))
"""


class RecordedSpend:
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings
        self._database = LazyConnection(settings)
        self._one_at_a_time = asyncio.Lock()  # one connection runs one query at a time

    async def __call__(self, key: Key) -> RecordedUsage:
        async with self._one_at_a_time, self._database.use() as connection:
            spend, window_spend, requests = await connection.fetchrow(
                QUERY,
                key.key_id,
                float(key.cost_window_seconds),
                float(key.rate_window_seconds),
                timeout=self._settings.read_timeout,
            )
        return RecordedUsage(int(spend), int(window_spend), int(requests))

    async def close(self) -> None:
        await self._database.close()
