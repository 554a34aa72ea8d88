"""An incremental reader of server-sent events: bytes in, split anywhere, whole events out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE_END = re.compile(rb"\r\n|\r|\n")
MAX_EVENT_BYTES = 4 * 1024 * 1024  # no real event comes near; past it the stream is not SSE


class EventTooLarge(ValueError):
    """An event, or a line, longer than MAX_EVENT_BYTES."""


@dataclass(frozen=True, slots=True)
class Event:
    name: str  # the `event:` field; "" when the event names none
    data: str  # its `data:` lines, joined by newlines


@dataclass(slots=True)
class EventReader:
    _pending: bytes = b""  # the start of a line that has not ended yet
    _name: str = ""
    _data: list[str] = field(default_factory=list)
    _size: int = 0

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that `chunk` completes, in order."""
        data = self._pending + chunk if self._pending else chunk
        # A CR at the very end may be the first half of a CRLF: its line waits for the next byte.
        last = len(data) - 1 if data.endswith(b"\r") else len(data)
        events: list[Event] = []
        start = 0
        for match in _LINE_END.finditer(data, 0, last):
            self._line(data[start : match.start()], events)
            start = match.end()
        self._pending = data[start:]
        if len(self._pending) + self._size > MAX_EVENT_BYTES:
            raise EventTooLarge(f"an event over {MAX_EVENT_BYTES} bytes")
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append(Event(self._name, "\n".join(self._data)))
            self._name, self._data, self._size = "", [], 0
            return
        name, _, value = line.decode("utf-8", "replace").partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._size += len(line)
        elif name == "event":
            self._name = value
