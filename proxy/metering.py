"""Stage 4, meter: what a call used, from upstream's usage or, failing that, counted with tiktoken.

Streams are read event by event as they pass: the usage event is picked out (and dropped when
the proxy, not the client, asked for it), and the streamed text is kept until usage arrives so
that a stream cut short is still billed for what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import tokens


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # Parts of the token counts above, priced at their own rates where a model has them.
    audio_tokens: int = 0
    image_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    seconds: float = 0.0  # audio transcribed, for models billed by the second


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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
        prompt, completion = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        # "input_token_details" is how the transcription API spells it.
        details = _details(usage.get("input_tokens_details") or usage.get("input_token_details"))
        output = _details(usage.get("output_tokens_details"))
    else:
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
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
        _int(cached) if cached else 0,
        _int(audio) if audio else 0,
        _int(image) if image else 0,
        _int(output_audio) if output_audio else 0,
        _int(output_image) if output_image else 0,
    )


def usage_of_body(body: bytes) -> tuple[Usage | None, str]:
    """Usage and model of a non-streamed JSON answer (a verbose transcription's duration too)."""
    members = top_level(body, ("model", "usage", "duration"))
    model = members.get("model")
    usage = parse_usage(members.get("usage"))
    duration = _seconds(members.get("duration"))
    if duration and (usage is None or usage == Usage()):
        usage = Usage(seconds=duration)
    return usage, model if isinstance(model, str) else ""


def _list(value: Any) -> list[Any]:
    """A JSON list where one belongs; anything else an upstream sends there counts as empty."""
    return value if isinstance(value, list) else []


def answer_text(body: bytes) -> str:
    """The generated text of a non-streamed answer, for counting when it carries no usage."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(payload, dict):
        return ""
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
    if isinstance(payload.get("delta"), str) and str(payload.get("type", "")).endswith(".delta"):
        return payload["delta"]  # responses API: output text and function-call arguments
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
    """Relays SSE bytes, finds the usage in them, and drops the usage-only chunk if asked to."""

    drop_usage_chunk: bool
    usage: Usage | None = None
    model: str = ""
    _pending: bytes = b""
    _texts: list[bytes] = field(default_factory=list)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send on: every complete event but a dropped one."""
        data = self._pending + chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: end + 2], data[end + 2 :]
        if self.usage is None and b'"usage"' not in complete:
            self._texts.append(complete)  # cheap path: nothing to decide yet
            return complete
        kept = [event for event in complete.split(b"\n\n")[:-1] if self._inspect(event)]
        return b"".join(event + b"\n\n" for event in kept)

    def flush(self) -> bytes:
        """What is left when upstream ends without a final blank line."""
        rest, self._pending = self._pending, b""
        if rest.strip() and self._inspect(rest):
            return rest
        return b""

    def _inspect(self, event: bytes) -> bool:
        """Take usage from an event; False when the event must not reach the client."""
        if b'"usage"' not in event:
            if self.usage is None:
                self._texts.append(event)
            return True
        payload = _event_json(event)
        if payload is None:
            return True
        response = payload.get("response")
        usage_holder: dict[str, Any] = response if isinstance(response, dict) else payload
        usage = parse_usage(usage_holder.get("usage"))
        if usage is None:
            if self.usage is None:
                self._texts.append(event)
            return True
        self.usage = usage
        self._texts.clear()
        if isinstance(usage_holder.get("model"), str):
            self.model = usage_holder["model"]
        return not (self.drop_usage_chunk and payload.get("choices") == [])

    def streamed_text(self) -> str:
        """Text streamed so far, for counting when upstream sent no usage."""
        pieces = []
        for block in self._texts:
            for event in block.split(b"\n\n"):
                payload = _event_json(event)
                if payload is not None:
                    pieces.append(_streamed_text(payload))
        return "".join(pieces)


def _event_json(event: bytes) -> dict[str, Any] | None:
    data = b"\n".join(
        line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
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


def top_level(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """The named members of a JSON object answer; empty when the body is not a JSON object."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(payload, dict):
        return {}
    return {name: payload[name] for name in names if name in payload}
