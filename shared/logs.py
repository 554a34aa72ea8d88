"""Logging set-up: one JSON object per line by default, plain text for local work."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


@lru_cache(maxsize=4)
def _second(whole_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole_seconds))


def json_line(
    created: float, level: str, logger: str, message: str, fields: dict[str, Any]
) -> bytes:
    """One log entry as a JSON object: time, level, logger and message, then the fields."""
    entry = {
        "time": f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "message": message,
        **fields,
    }
    return orjson.dumps(entry, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        line = json_line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), fields
        )
        return line.decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


class Throttle:
    """For a line that could repeat on every call: due at most once per `interval` seconds.

    Callers count what they held back while it was not due, and say it in the next line."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = -math.inf

    def due(self) -> bool:
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        """The next line is due at once (the condition it reports has ended)."""
        self._last = -math.inf


# Writes to a pipe up to this size arrive whole, never mixed with another process's writes.
PIPE_BUF = 4096
FLUSH_DELAY = 0.1  # seconds a call's log line may wait in the buffer


class HotLog:
    """An INFO line per event on a hot path, without the logging module's cost per line.

    logging spends about 45 µs a line (a record, the handler's lock, the formatter, one write per
    line). With LOG_FORMAT=json a line is formatted straight from its fields and buffered; the
    buffer goes to stderr when the next line would take it past PIPE_BUF bytes, or FLUSH_DELAY
    after its first line, so a line shows within that delay, and the writes of workers sharing
    stderr never cut into each other's lines. Otherwise the line goes through logging.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        self._logger = logger
        self._json = log_format == "json"
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def info(self, message: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if not self._json:
            self._logger.info(message, extra=fields)
            return
        line = json_line(time.time(), "info", self._logger.name, message, fields) + b"\n"
        if len(self._buffer) + len(line) > PIPE_BUF:
            self.flush()
        self._buffer += line
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buffer:
            try:
                sys.stderr.write(self._buffer.decode())
                sys.stderr.flush()
            except OSError:  # as logging does: a log that cannot be written never fails a call
                pass
            self._buffer.clear()


def setup_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would add a second line per request; the services log their own.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
