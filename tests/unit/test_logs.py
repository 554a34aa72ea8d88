"""Log lines: the JSON formatter, and the per-call log that bypasses the logging module."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import orjson
import pytest

from shared.logs import FLUSH_DELAY, PIPE_BUF, HotLog, JsonFormatter, Throttle


class Writes:
    """Stands in for stderr and keeps every write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def entries(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in "".join(self.writes).splitlines()]


def capture_stderr(monkeypatch: pytest.MonkeyPatch) -> Writes:
    # In the test itself: pytest sets its own sys.stderr again when the test's call begins.
    writes = Writes()
    monkeypatch.setattr(sys, "stderr", writes)
    return writes


def test_the_json_formatter_puts_extra_fields_beside_the_message() -> None:
    record = logging.makeLogRecord(
        {"name": "gateway.x", "levelname": "WARNING", "msg": "a %s", "args": ("b",), "n": 3}
    )
    record.created = 1_700_000_000.25
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "gateway.x",
        "message": "a b",
        "n": 3,
    }


async def test_lines_are_written_in_whole_lines_of_at_most_pipe_buf_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = capture_stderr(monkeypatch)
    logger = logging.getLogger("test.hotlog")
    logger.setLevel(logging.INFO)
    log = HotLog(logger, "json")
    for n in range(40):
        log.info("call", {"n": n, "padding": "x" * 300, "text": "é"})
    await asyncio.sleep(FLUSH_DELAY * 2)
    entries = stderr.entries()
    assert [e["n"] for e in entries] == list(range(40))
    assert {(e["level"], e["logger"], e["message"], e["text"]) for e in entries} == {
        ("info", "test.hotlog", "call", "é")
    }
    assert 1 < len(stderr.writes) < 40
    for write in stderr.writes:
        assert len(write.encode()) <= PIPE_BUF and write.endswith("\n")


async def test_a_few_lines_wait_together_for_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = capture_stderr(monkeypatch)
    logger = logging.getLogger("test.hotlog.few")
    logger.setLevel(logging.INFO)
    log = HotLog(logger, "json")
    log.info("call", {"n": 1})
    log.info("call", {"n": 2})
    await asyncio.sleep(FLUSH_DELAY / 4)
    assert stderr.writes == []
    await asyncio.sleep(FLUSH_DELAY)
    assert len(stderr.writes) == 1
    assert [e["n"] for e in stderr.entries()] == [1, 2]


async def test_a_disabled_level_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = capture_stderr(monkeypatch)
    logger = logging.getLogger("test.hotlog.quiet")
    logger.setLevel(logging.WARNING)
    HotLog(logger, "json").info("call", {"n": 1})
    await asyncio.sleep(FLUSH_DELAY * 2)
    assert stderr.writes == []


def test_text_format_goes_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.hotlog.text"):
        HotLog(logging.getLogger("test.hotlog.text"), "text").info("call", {"n": 7})
    [record] = caplog.records
    assert (record.getMessage(), record.__dict__["n"]) == ("call", 7)


async def test_a_failing_stderr_never_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(Writes):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stderr", Broken())
    logger = logging.getLogger("test.hotlog.broken")
    logger.setLevel(logging.INFO)
    log = HotLog(logger, "json")
    for n in range(20):  # past PIPE_BUF, so info itself flushes
        log.info("call", {"n": n, "padding": "x" * 300})
    log.flush()
    stderr = capture_stderr(monkeypatch)
    log.info("call", {"n": 99})
    log.flush()
    assert [e["n"] for e in stderr.entries()] == [99]  # the failed lines were dropped


def test_a_throttled_line_is_due_once_an_interval_and_at_once_after_a_reset() -> None:
    now = [100.0]
    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.due()
    now[0] += 59.9
    assert not throttle.due()
    now[0] += 0.1
    assert throttle.due()
    assert not throttle.due()
    throttle.reset()
    assert throttle.due()
