"""Cool-down: a route step whose target failed `coolDown.failures` calls in a row is skipped for
`coolDown.period`, so that a dead provider costs a call no time. Per replica, in memory, by
route id and step target (provider, setting and model): a changed route keeps the counts of the
targets it still has, wherever they moved to, and a step given another target starts afresh (a
new route id too).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.routes.model import Route


@dataclass(slots=True)
class _Record:
    failures: int = 0  # consecutive failed calls
    until: float = 0.0  # monotonic time until which the step is skipped


def _key(route: Route, step: int) -> tuple[str, tuple[str, str | None, str]]:
    return route.route_id, route.steps[step].target


class CoolDowns:
    def __init__(self) -> None:
        self._records: dict[tuple[str, tuple[str, str | None, str]], _Record] = {}

    def cooling(self, route: Route, step: int, now: float) -> bool:
        if not self._records or not route.cool_down_failures:  # a route changed to never
            return False
        record = self._records.get(_key(route, step))
        return record is not None and record.until > now

    def failed(self, route: Route, step: int, now: float) -> None:
        if not route.cool_down_failures:
            return
        record = self._records.setdefault(_key(route, step), _Record())
        record.failures += 1
        if record.failures >= route.cool_down_failures:
            record.failures, record.until = 0, now + route.cool_down_period

    def succeeded(self, route: Route, step: int) -> None:
        # Most calls succeed on a step that never failed: no record to drop, one dict lookup.
        if self._records:
            self._records.pop(_key(route, step), None)
