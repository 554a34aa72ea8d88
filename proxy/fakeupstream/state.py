"""Options, recorded requests and the fake's state."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JSON = dict[str, Any]

# Fixed timestamps keep bodies deterministic.
CREATED = 1_700_000_000
REPLY_WORDS = ("Hello", "from", "the", "fake", "upstream.")
TOOL_ARGUMENT_FRAGMENTS: tuple[str, ...] = ('{"', "query", '": "', "fake", '"}')
MODELS = ("gpt-4o-mini", "gpt-4o", "o4-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
CLAUDE_MODELS = (  # newest first, as Anthropic lists them
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
)
EMBEDDING_DIMENSIONS = 8
SPEECH_BYTES = bytes(range(256)) * 256  # 64 KiB
SPEECH_CHUNK = 16 * 1024
IMAGE_TOKENS_SQUARE = {"low": 272, "medium": 1056, "high": 4160}  # gpt-image-1, 1024x1024
# A 1x1 transparent PNG.
IMAGE_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MODERATION_RESULT: JSON = {
    "flagged": False,
    "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
    "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0),
    "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
}
# Azure OpenAI's content-filter verdicts: what a harmless prompt and answer get.
_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS: JSON = {
    "hate": _SAFE,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
PROMPT_FILTER_RESULTS: list[JSON] = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **CONTENT_FILTER_RESULTS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
# Azure's first chunk of a stream: no choices, only the prompt's filter results.
PROMPT_FILTER_CHUNK: JSON = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": PROMPT_FILTER_RESULTS,
}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
# In a stream's events: drop the connection there, as a failing upstream may mid-answer.
CUT_CONNECTION = b"<cut the connection>"
# Fault triggers, in the last message (chat and Anthropic messages alike), when streamed:
ERROR_AFTER_PREAMBLE = "[fake:error-after-preamble]"  # the first event(s), then an error event
CUT_AFTER_CONTENT = "[fake:cut-after-content]"  # some content, then the connection dropped


@dataclass
class FakeOptions:
    latency: float = 0.0  # seconds before answering (asyncio.sleep), 0 = none
    stream_interval: float = 0.0  # seconds between SSE events
    stream_chunks: int = 5  # content chunks (= completion tokens) per completion
    report_usage: bool = True  # False: never send usage, like some compatible servers
    fail_status: int | None = None  # answer every API call with this status and an error body
    # Statuses of the next API calls, one popped per call, answered as fail_status would be;
    # with `retry_after` as their Retry-After header when set.
    fail_next: list[int] = field(default_factory=list)
    retry_after: str | None = None
    stream_fault: str = ""  # ERROR_AFTER_PREAMBLE or CUT_AFTER_CONTENT: every stream fails so
    record: bool = True  # keep every request in `FakeUpstream.recorded`
    echo: bool = False  # chat answers repeat the last message, three characters a piece


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes


@dataclass
class FakeUpstream:
    options: FakeOptions = field(default_factory=FakeOptions)
    recorded: list[RecordedRequest] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):024x}"


FAKE_UPSTREAM = web.AppKey("fake_upstream", FakeUpstream)


class FakeAPIError(Exception):
    """An OpenAI-shaped error answer, raised from a handler and rendered by the middleware."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class FakeAnthropicError(Exception):
    """An Anthropic-shaped error answer, raised from a handler and rendered by the middleware."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
