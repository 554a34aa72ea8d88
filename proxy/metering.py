"""Stage 4, meter: what a call used, from upstream's usage or, failing that, counted with tiktoken.

Streams are read event by event as they pass (an event ends at a blank line, whatever the line
ends: LF, CRLF or CR): the usage event is picked out (and dropped when the proxy, not the client,
asked for it), and the streamed text is kept until usage arrives so that a stream cut short is
still billed for what was sent. What a stream holds is bounded: raw events are boiled down to
their text, long text is counted as it grows, and an event that does not end within
MAX_EVENT_BYTES is relayed as it comes, uninspected. A large JSON answer is scanned for the few
top-level members metering needs; the rest of it is never built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.jsonscan import members
from shared import tokens
from shared.jsonutil import positive_int

MAX_EVENT_BYTES = 4 * 1024**2  # above any usage event, even a long answer's response.completed
RAW_TEXT_BYTES = 64 * 1024  # raw events kept for counting before they are boiled down to text
TEXT_CHARS = 1024**2  # text kept before what is safe to count of it is counted

_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"
_EVENT_END = re.compile(_LINE_END + _LINE_END)  # a line end, then a blank line
_CR = ord("\r")
USAGE_KEY = b'"usage"'
_TERMINATOR_TAIL = 3  # bytes of a blank line that may have arrived before the rest of it
# In cl100k and o200k no pre-token ends with a space, or runs on from a line end into
# anything but whitespace or a slash.
_PRETOKEN_START = re.compile(r"(?= \S)|(?<=[\r\n])(?=[^\s/])")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens: read from a prompt cache
    # Parts of the token counts above, priced at their own rates where a model has them.
    audio_tokens: int = 0
    image_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    seconds: float = 0.0  # audio transcribed, for models billed by the second
    cache_creation_tokens: int = 0  # part of prompt_tokens: written to a prompt cache


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if 0 < value < 1e9 else 0.0  # NaN fails the comparison too


def _details(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_usage(usage: Any) -> Usage | None:
    """Usage in any shape: chat/completions/embeddings, the responses, images and audio APIs."""
    if not isinstance(usage, dict):
        return None
    if usage.get("type") == "duration":  # a transcription billed by the second
        return Usage(seconds=_seconds(usage.get("seconds")))
    if "input_tokens" in usage:
        prompt = positive_int(usage.get("input_tokens"))
        completion = positive_int(usage.get("output_tokens"))
        # "input_token_details" is how the transcription API spells it.
        details = _details(usage.get("input_tokens_details") or usage.get("input_token_details"))
        output = _details(usage.get("output_tokens_details"))
    else:
        prompt = positive_int(usage.get("prompt_tokens"))
        completion = positive_int(usage.get("completion_tokens"))
        details = _details(usage.get("prompt_tokens_details"))
        output = _details(usage.get("completion_tokens_details"))
    cached, audio, image = (
        details.get("cached_tokens"),
        details.get("audio_tokens"),
        details.get("image_tokens"),
    )
    output_audio, output_image = output.get("audio_tokens"), output.get("image_tokens")
    # Zeros are the rule: skip the checks for them.
    return Usage(
        prompt,
        completion,
        positive_int(cached) if cached else 0,
        positive_int(audio) if audio else 0,
        positive_int(image) if image else 0,
        positive_int(output_audio) if output_audio else 0,
        positive_int(output_image) if output_image else 0,
    )


def usage_of_body(body: bytes) -> tuple[Usage | None, str]:
    """Usage and model of a non-streamed JSON answer (a verbose transcription's duration too)."""
    answer = members(body, ("model", "usage", "duration"))
    model = answer.get("model")
    usage = parse_usage(answer.get("usage"))
    duration = _seconds(answer.get("duration"))
    if duration and (usage is None or usage == Usage()):
        usage = Usage(seconds=duration)
    return usage, model if isinstance(model, str) else ""


def _list(value: Any) -> list[Any]:
    """A JSON list where one belongs; anything else an upstream sends there counts as empty."""
    return value if isinstance(value, list) else []


def answer_text(body: bytes) -> str:
    """The generated text of a non-streamed answer, for counting when it carries no usage."""
    payload = members(body, ("choices", "output"))
    pieces = []
    for choice in _list(payload.get("choices")):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            pieces.append(_streamed_text({"choices": [{"delta": message}]}))
        elif isinstance(choice, dict) and isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
    for item in _list(payload.get("output")):
        for part in _list(item.get("content")) if isinstance(item, dict) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
    return "".join(pieces)


def _streamed_text(payload: dict[str, Any]) -> str:
    """The generated text an event carries, in any of the streamed shapes."""
    delta = payload.get("delta")
    if isinstance(delta, str) and str(payload.get("type", "")).endswith(".delta"):
        return delta  # responses API: output text and function-call arguments
    if isinstance(delta, dict):  # Anthropic's content_block_delta: text, tool input, thinking
        for name in ("text", "partial_json", "thinking"):
            if isinstance(delta.get(name), str):
                return str(delta[name])
    pieces = []
    for choice in _list(payload.get("choices")):
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str):
                    pieces.append(delta[name])
            for call in _list(delta.get("tool_calls")):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    pieces.append(function["arguments"])
    return "".join(pieces)


@dataclass(slots=True)
class StreamMeter:
    """Relays SSE bytes, finds the usage in them, and drops the usage-only chunk if asked to.

    What passes is relayed byte for byte; only a dropped event's bytes are left out.
    """

    drop_usage_chunk: bool
    count: tokens.TextCounter  # the model's tokens in a text, for a stream without usage
    usage: Usage | None = None
    model: str = ""
    _pending: bytes = b""  # the start of an event that has not ended yet
    _oversized: bool = False  # inside an event too long to hold: relayed, not inspected
    _raw: list[bytes] = field(default_factory=list)  # events not yet boiled down to text
    _raw_bytes: int = 0
    _text: list[str] = field(default_factory=list)
    _text_chars: int = 0
    _counted: int = 0  # tokens of the text already counted and let go
    _long: bool = False  # past RAW_TEXT_BYTES: the text of a parsed event is taken at once

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send on: every complete event but a dropped one."""
        data = self._pending + chunk if self._pending else chunk
        if self._oversized:
            return self._pass_oversized(data)
        if _CR not in data:  # an int: a memchr, several times quicker than b"\r" in data
            return self._relay_split(data, b"\n\n")
        if data.count(b"\r\n") == data.count(b"\r") == data.count(b"\n"):
            return self._relay_split(data, b"\r\n\r\n")
        return self._relay_events(data)

    def flush(self) -> bytes:
        """What is left when upstream ends without a final blank line."""
        rest, self._pending = self._pending, b""
        if self._oversized or (rest.strip() and self._inspect(rest)):
            return rest
        return b""

    def completion_tokens(self) -> int:
        """Tokens streamed so far, for billing when upstream sent no usage."""
        self._boil_down()
        return self._counted + self.count("".join(self._text))

    def usage_when_cut(self, prompt_tokens: Callable[[], int]) -> Usage:
        """What to bill a stream that ended without usage: `prompt_tokens` estimates the
        prompt, the streamed text is counted. Counts with tiktoken: off the event loop."""
        return Usage(prompt_tokens(), self.completion_tokens())

    def _relay_split(self, data: bytes, blank_line: bytes) -> bytes:
        """Relay the events of data whose every line ends alike (LF, or CRLF)."""
        end = data.rfind(blank_line)
        if end < 0:
            self._pending = data
            return self._bound_pending()
        end += len(blank_line)
        complete, self._pending = data[:end], data[end:]
        if self.usage is None and complete.find(USAGE_KEY) < 0:  # find: quicker than "in"
            self._raw.append(complete)  # cheap path: nothing to decide yet
            self._raw_bytes = raw_bytes = self._raw_bytes + end
            if raw_bytes > RAW_TEXT_BYTES:
                self._boil_down()
            relayed = complete
        else:
            events = complete.split(blank_line)
            events.pop()  # what follows the last blank line: nothing
            kept = [event for event in events if self._inspect(event)]
            if len(kept) == len(events):
                relayed = complete
            else:
                relayed = b"".join(event + blank_line for event in kept)
        if self._pending and len(self._pending) > MAX_EVENT_BYTES:
            relayed += self._bound_pending()
        return relayed

    def _relay_events(self, data: bytes) -> bytes:
        """Relay events whose lines end in any mix of CR, LF and CRLF, one by one."""
        # A CR at the very end may be the first half of a CRLF: that event waits for the next byte.
        last = len(data) - 1 if data.endswith(b"\r") else len(data)
        start = kept_from = 0
        pieces = []
        for match in _EVENT_END.finditer(data, 0, last):
            end = match.end()
            if not self._inspect(data[start:end]):
                pieces.append(data[kept_from:start])
                kept_from = end
            start = end
        self._pending = data[start:]
        relayed = data[kept_from:start]
        if pieces:
            relayed = b"".join(pieces) + relayed
        return relayed + self._bound_pending()

    def _bound_pending(self) -> bytes:
        """An event past MAX_EVENT_BYTES is relayed as it comes; only its end is looked for."""
        if len(self._pending) <= MAX_EVENT_BYTES:
            return b""
        self._oversized = True
        relayed = self._pending[:-_TERMINATOR_TAIL]
        self._pending = self._pending[-_TERMINATOR_TAIL:]
        return relayed

    def _pass_oversized(self, data: bytes) -> bytes:
        last = len(data) - 1 if data.endswith(b"\r") else len(data)
        match = _EVENT_END.search(data, 0, last)
        if match is None:
            self._pending = data[-_TERMINATOR_TAIL:]
            return data[:-_TERMINATOR_TAIL]
        self._oversized, self._pending = False, b""
        return data[: match.end()] + self.feed(data[match.end() :])

    def _inspect(self, event: bytes) -> bool:
        """Take usage from an event; False when the event must not reach the client."""
        payload = event_json(event) if event.find(USAGE_KEY) >= 0 else None
        if payload is not None:
            response = payload.get("response")
            usage_holder: dict[str, Any] = response if isinstance(response, dict) else payload
            usage = parse_usage(usage_holder.get("usage"))
            if usage is not None:
                self.usage = usage
                self._forget_text()
                if isinstance(usage_holder.get("model"), str):
                    self.model = usage_holder["model"]
                return not (self.drop_usage_chunk and payload.get("choices") == [])
        if self.usage is None:
            if payload is not None and self._long:
                self._boil_down()  # the text of the events before this one comes first
                self._add_text(_streamed_text(payload))  # parsed already: no need to keep it
            else:
                self._keep(event)
        return True

    def _forget_text(self) -> None:
        """Usage has come: the text kept for counting is of no more use."""
        self._raw.clear()
        self._text.clear()
        self._raw_bytes = self._text_chars = self._counted = 0

    def _keep(self, events: bytes) -> None:
        """Keep events for counting; raw until there are many, then only their text."""
        self._raw.append(events)
        self._raw_bytes += len(events)
        if self._raw_bytes > RAW_TEXT_BYTES:
            self._boil_down()

    def _boil_down(self) -> None:
        """Let the raw events go, keeping their text; the stream is a long one from now on."""
        self._long = True
        if not self._raw:
            return
        pieces = []
        for block in self._raw:
            for event in _EVENT_END.split(block) if _CR in block else block.split(b"\n\n"):
                payload = event_json(event)
                if payload is not None:
                    pieces.append(_streamed_text(payload))
        self._raw.clear()
        self._raw_bytes = 0
        self._add_text("".join(pieces))

    def _add_text(self, text: str) -> None:
        self._text.append(text)
        self._text_chars += len(text)
        if len(self._text) > 64:
            self._text = ["".join(self._text)]  # one string, not one per event
        if self._text_chars > TEXT_CHARS:
            self._count_most()

    def _count_most(self) -> None:
        """Count the text up to its last pre-token boundary, and keep only the rest."""
        text = "".join(self._text)
        cut = _last_pretoken_start(text) or len(text)  # none: a token split in two, at worst
        self._counted += self.count(text[:cut])
        rest = text[cut:]
        self._text, self._text_chars = [rest], len(rest)


def _last_pretoken_start(text: str) -> int:
    """Where the last pre-token surely starts in tiktoken's encodings (0 if nowhere), so that
    the counts of the text before and after it add up to the count of the whole."""
    end = len(text)
    while end > 0:
        start = max(0, end - 4096)
        last = max(
            (match.start() for match in _PRETOKEN_START.finditer(text, start, end)), default=0
        )
        if last:
            return last
        end = start
    return 0


def event_json(event: bytes) -> dict[str, Any] | None:
    data = b"\n".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ).strip()
    if not data or data == b"[DONE]":
        return None
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def counted_usage(prompt_tokens: int, streamed_text: str, model: str) -> Usage:
    return Usage(prompt_tokens, tokens.count_text(streamed_text, model))


def events_text(raw: bytes) -> str:
    """The generated text of a whole event stream, in order: a streamed answer as one text."""
    events = _EVENT_END.split(raw) if _CR in raw else raw.split(b"\n\n")
    payloads = (event_json(event) for event in events)
    return "".join(_streamed_text(payload) for payload in payloads if payload is not None)
