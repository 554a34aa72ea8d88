"""Embeddings, moderations, images, audio, files, models, and unknown paths."""

from __future__ import annotations

import base64
import math
import re
import struct
import zlib

import orjson
from aiohttp import web

from proxy.fakeupstream.accounting import (
    input_tokens,
)
from proxy.fakeupstream.state import (
    CREATED,
    EMBEDDING_DIMENSIONS,
    FAKE_UPSTREAM,
    IMAGE_B64,
    IMAGE_TOKENS_SQUARE,
    JSON,
    MODELS,
    MODERATION_RESULT,
    REPLY_WORDS,
    SPEECH_BYTES,
    SPEECH_CHUNK,
    FakeAPIError,
    StoredFile,
)
from proxy.fakeupstream.wire import (
    error_payload,
    json_response,
    multipart_fields,
    read_json,
    sse,
    stream_events,
)

# --- embeddings, moderations, images ---------------------------------------------------------


def _embedding_inputs(value: object) -> list[object]:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, int) for v in value)
    ):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def _vector_bytes(item: object, dimensions: int) -> bytes:
    seed = zlib.crc32(orjson.dumps(item))
    return struct.pack(f"<{dimensions}f", *(math.sin(seed + i) for i in range(dimensions)))


async def embeddings(request: web.Request) -> web.Response:
    return answer_embeddings(request, await read_json(request))


def answer_embeddings(request: web.Request, body: JSON) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    inputs = _embedding_inputs(body.get("input"))
    dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        packed = _vector_bytes(item, dimensions)
        # Floats go out float32-rounded, so both encodings decode to the same numbers.
        vector = (
            base64.b64encode(packed).decode()
            if as_base64
            else struct.unpack(f"<{dimensions}f", packed)
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = input_tokens(inputs)
    payload: JSON = {"object": "list", "data": data, "model": body.get("model", "")}
    if state.options.report_usage:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response(payload)


async def moderations(request: web.Request) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    body = await read_json(request)
    value = body.get("input")
    count = len(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else 1
    model = body.get("model") or "omni-moderation-latest"
    return json_response(
        {"id": state.new_id("modr-"), "model": model, "results": [MODERATION_RESULT] * count}
    )


def _field(fields: dict[str, tuple[str | None, bytes]], name: str, default: str) -> str:
    return fields[name][1].decode() if name in fields else default


async def _image_request(request: web.Request) -> tuple[JSON, int]:
    """The request's fields, JSON or multipart, and how many images it uploads."""
    if request.content_type != "multipart/form-data":
        return await read_json(request), 0
    fields = multipart_fields(request, await request.read())
    uploads = sum(1 for _, (filename, _) in fields.items() if filename is not None)
    body: JSON = {
        name: value.decode() for name, (filename, value) in fields.items() if not filename
    }
    return body, uploads


def _image_usage(body: JSON, uploads: int, count: int) -> JSON:
    """gpt-image-* usage: prompt words, 100 tokens an uploaded image, and gpt-image-1's output
    tokens for the quality (auto: medium) and size (auto: 1024x1024)."""
    words = len(str(body.get("prompt") or "").split())
    quality = str(body.get("quality"))
    quality = quality if quality in IMAGE_TOKENS_SQUARE else "medium"
    size = re.fullmatch(r"(\d+)x(\d+)", str(body.get("size") or ""))
    pixels = int(size[1]) * int(size[2]) if size else 1024 * 1024
    output = count * IMAGE_TOKENS_SQUARE[quality] * pixels // (1024 * 1024)
    return {
        "input_tokens": words + 100 * uploads,
        "input_tokens_details": {"text_tokens": words, "image_tokens": 100 * uploads},
        "output_tokens": output,
        "total_tokens": words + 100 * uploads + output,
    }


async def images(request: web.Request) -> web.Response:
    """Generations, edits (JSON or multipart) and variations (multipart)."""
    body, uploads = await _image_request(request)
    count = int(body.get("n") or 1)
    if body.get("response_format") == "url":
        image = {"url": "https://fake-upstream.invalid/image.png", "revised_prompt": None}
    else:
        image = {"b64_json": IMAGE_B64, "revised_prompt": None}
    payload: JSON = {"created": CREATED, "data": [image] * count}
    if str(body.get("model", "")).startswith("gpt-image"):
        payload["usage"] = _image_usage(body, uploads, count)
    return json_response(payload)


# --- audio and files -------------------------------------------------------------------------


async def audio_speech(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    chunks = [SPEECH_BYTES[i : i + SPEECH_CHUNK] for i in range(0, len(SPEECH_BYTES), SPEECH_CHUNK)]
    interval = request.app[FAKE_UPSTREAM].options.stream_interval
    if body.get("stream_format") != "sse":
        return await stream_events(request, chunks, interval, {"Content-Type": "audio/mpeg"})
    words = len(str(body.get("input") or "").split())
    usage = {"input_tokens": words, "output_tokens": 4 * len(chunks)}  # 4 tokens a chunk
    events = [
        *(
            sse({"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()})
            for c in chunks
        ),
        sse({"type": "speech.audio.done", "usage": {**usage, "total_tokens": sum(usage.values())}}),
    ]
    return await stream_events(request, events, interval)


def _transcript(model: str, seconds: float, response_format: str, task: str) -> JSON:
    """Whisper reports seconds; other models tokens (10 a second of audio, a word of text)."""
    text = " ".join(REPLY_WORDS)
    if not model.startswith("whisper"):
        audio_tokens = math.ceil(seconds * 10)
        usage = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": len(REPLY_WORDS),
            "total_tokens": audio_tokens + len(REPLY_WORDS),
        }
        return {"text": text, "usage": usage}
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if response_format != "verbose_json":
        return {"text": text, "usage": usage}
    return {
        "task": task,
        "language": "english",
        "duration": seconds,
        "text": text,
        "segments": [],
        "usage": usage,
    }


async def audio_transcriptions(request: web.Request) -> web.Response:
    """Transcriptions and translations: a second of audio per 32,000 bytes (16-bit, 16 kHz)."""
    fields = multipart_fields(request, await request.read())
    if "file" not in fields:
        raise FakeAPIError(400, "Missing required parameter: 'file'.", param="file")
    response_format = _field(fields, "response_format", "json")
    if response_format in ("text", "srt", "vtt"):
        return web.Response(text=" ".join(REPLY_WORDS), content_type="text/plain")
    seconds = len(fields["file"][1]) / 32_000
    task = "translate" if request.path.endswith("/translations") else "transcribe"
    return json_response(_transcript(_field(fields, "model", ""), seconds, response_format, task))


def _file_object(stored: StoredFile) -> JSON:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": CREATED,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


async def upload_file(request: web.Request) -> web.Response:
    state = request.app[FAKE_UPSTREAM]
    fields = multipart_fields(request, await request.read())
    if "file" not in fields:
        raise FakeAPIError(400, "Missing required parameter: 'file'.", param="file")
    filename, data = fields["file"]
    purpose = fields.get("purpose", (None, b"user_data"))[1].decode()
    stored = StoredFile(state.new_id("file-"), filename or "upload", purpose, data)
    state.files[stored.id] = stored
    return json_response(_file_object(stored))


def _stored_file(request: web.Request) -> StoredFile:
    file_id = request.match_info["file_id"]
    stored = request.app[FAKE_UPSTREAM].files.get(file_id)
    if stored is None:
        raise FakeAPIError(404, f"No such File object: {file_id}", param="id")
    return stored


async def retrieve_file(request: web.Request) -> web.Response:
    return json_response(_file_object(_stored_file(request)))


async def file_content(request: web.Request) -> web.Response:
    return web.Response(body=_stored_file(request).data, content_type="application/octet-stream")


# --- models and fallbacks --------------------------------------------------------------------


def _model(model_id: str) -> JSON:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}


MODELS_BODY = orjson.dumps({"object": "list", "data": [_model(m) for m in MODELS]})
NOT_FOUND_BODY = orjson.dumps(
    error_payload(404, "Invalid URL: no such route on the fake upstream.", "unknown_url", None)
)


async def list_models(request: web.Request) -> web.Response:
    return web.Response(body=MODELS_BODY, content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    if model_id not in MODELS:
        raise FakeAPIError(
            404, f"The model '{model_id}' does not exist", "model_not_found", "model"
        )
    return json_response(_model(model_id))


async def unknown_route(request: web.Request) -> web.Response:
    return web.Response(status=404, body=NOT_FOUND_BODY, content_type="application/json")
