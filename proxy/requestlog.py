"""Request logging: the bodies of a key's calls (`shouldLogRequest`, `shouldLogResponse`), stored
with the call's event in Postgres, each at most 1 MB (then flagged truncated).

They travel in the usage event through the Redis stream, and only in the events of keys that
log: other calls pay one flag test. They never reach a log line. The request is what went
upstream (after redaction, once policies exist; a multipart form as its fields, without its
files); a JSON answer is kept as it came, a streamed one as its assembled text and final usage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from proxy.calls import Call
from proxy.metering import events_text

MAX_CONTENT_BYTES = 1024 * 1024
# Raw SSE bytes kept to assemble a logged stream's text from: its JSON framing takes room too.
MAX_STREAM_BYTES = 8 * MAX_CONTENT_BYTES


class StreamRecord:
    """A logged stream's bytes as they pass, up to a bound."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self.cut = False

    def feed(self, chunk: bytes) -> None:
        if self._size + len(chunk) > MAX_STREAM_BYTES:
            self.cut = True
            return
        self._chunks.append(chunk)
        self._size += len(chunk)

    def text(self) -> str:
        return events_text(b"".join(self._chunks))


def stream_record(call: Call) -> StreamRecord | None:
    if not call.key.should_log_response:
        return None
    call.stream_record = StreamRecord()
    return call.stream_record


def capped(content: bytes | str, cut: bool = False) -> tuple[str, bool]:
    """At most MAX_CONTENT_BYTES of UTF-8 (never a character split), without NUL, which
    Postgres text cannot hold; and whether anything was cut."""
    raw = content.encode("utf-8", "replace") if isinstance(content, str) else content
    truncated = cut or len(raw) > MAX_CONTENT_BYTES
    text = raw[:MAX_CONTENT_BYTES].decode("utf-8", "ignore" if truncated else "replace")
    return text.replace("\x00", ""), truncated


def logged_contents(call: Call) -> dict[str, Any]:
    """The event fields of what the call's key logs; none for a key that logs nothing."""
    key = call.key
    fields: dict[str, Any] = {}
    if key.should_log_request:
        screening = call.screening
        if screening is not None and screening.logged_request is not None:
            body = screening.logged_request  # blocked or warned about: the values masked
        else:
            body = call.body if call.upload_bytes == 0 else orjson.dumps(call.payload)
        fields["request_content"], fields["request_truncated"] = capped(body)
    if key.should_log_response:
        answer = response_content(call)
        if answer is not None:
            fields["response_content"], fields["response_truncated"] = answer
    return fields


def response_content(call: Call) -> tuple[str, bool] | None:
    if call.response_body is not None:
        return capped(remasked(call.response_body.decode("utf-8", "replace"), call))
    record = call.stream_record
    if record is None:
        return None
    usage = dataclasses.asdict(call.usage) if call.usage is not None else None
    # The text capped first, so that the usage after it survives: JSON escapes add a little.
    text, cut = capped(remasked(record.text(), call), record.cut)
    content, escaped_past = capped(orjson.dumps({"content": text, "usage": usage}))
    return content, cut or escaped_past


def remasked(answer: str, call: Call) -> str:
    """The answer as stored: the values a policy put back for the client are placeholders again,
    as in the request, so that a logged body holds none of them."""
    screening = call.screening
    if screening is None or not screening.restore:
        return answer
    for placeholder, value in sorted(screening.restore.items(), key=lambda kv: -len(kv[1])):
        answer = answer.replace(value, placeholder)
        escaped = orjson.dumps(value).decode()[1:-1]  # as a JSON answer carries it
        if escaped != value:
            answer = answer.replace(escaped, placeholder)
    return answer
