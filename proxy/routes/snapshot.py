"""The routes the proxy serves, by path: a lookup is one dict access. Each change builds new
mappings aside and rebinds them in one assignment (routes are few; keys are not)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.routes.model import Route, route_of
from proxy.snapshot import Source

log = logging.getLogger("gateway.snapshot")


class RouteSnapshot:
    def __init__(self) -> None:
        self._by_path: dict[str, Route] = {}
        self._by_id: dict[str, Route] = {}
        self.loaded = False
        self.refreshed_at = 0.0  # monotonic time of the last successful read

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, path: str) -> Route | None:
        return self._by_path.get(path)

    def by_id(self, route_id: str) -> Route | None:
        return self._by_id.get(route_id)

    def replace(self, live: Iterable[Route]) -> None:
        by_id = {route.route_id: route for route in live if not route.deleted}
        self._by_id, self._by_path = by_id, {route.path: route for route in by_id.values()}
        self.loaded = True

    def apply(self, changed: Iterable[Route]) -> None:
        by_id = dict(self._by_id)
        for route in changed:
            if route.deleted:
                by_id.pop(route.route_id, None)
            else:
                by_id[route.route_id] = route
        # keymgmt keeps live paths unique, so a path moved from one route to another lands once.
        self._by_id, self._by_path = by_id, {route.path: route for route in by_id.values()}


ROUTE_QUERY = """
    SELECT route_id::text, path, key_ids::text[], steps::text, retry_strategy,
        cache_config::text, cool_down::text, extract(epoch FROM updated_at)::float8,
        deleted_at IS NOT NULL
    FROM routes"""


def parsed_route(row: Any) -> Route:
    """The row's route; one this proxy cannot read is served as deleted, not as a failed refresh
    that would hold every other change back."""
    route_id, path, key_ids, steps, strategy, cache, cool_down, updated_at, deleted = row
    try:
        return route_of(
            route_id, path, key_ids, orjson.loads(steps), strategy, orjson.loads(cache),
            orjson.loads(cool_down), updated_at=updated_at, deleted=deleted,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        log.warning("route %s is not readable, not serving it: %r", route_id, error)
        return Route(
            route_id, path, frozenset(), (), exponential_backoff=False, cache_enabled=False,
            cache_ttl=0.0, cool_down_failures=0, cool_down_period=0.0, updated_at=updated_at,
            deleted=True,
        )  # fmt: skip


ROUTE_SOURCE = Source(
    "route", "routes", ROUTE_QUERY, "routes.route_id", parsed_route, lambda r: r.route_id
)
