"""The small text fields of a multipart/form-data body, found in its bytes, files left alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

FIELD_BYTES_MOST = 4096  # metering reads short fields (model, n, size); longer ones are skipped
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'\bname=(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)
_FILENAME = re.compile(rb"\bfilename\*?=", re.IGNORECASE)


class MalformedForm(ValueError):
    pass


@dataclass(slots=True)
class Form:
    fields: dict[str, str]
    file_bytes: int  # the size of its files, all together


def read_form(body: bytes, content_type: str) -> Form:
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MalformedForm("the Content-Type names no boundary")
    delimiter = b"--" + (match[1] or match[2]).encode("latin-1")
    position = body.find(delimiter)
    if position < 0:
        raise MalformedForm("the body does not hold the boundary")
    form = Form({}, 0)
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return form
        end = body.find(b"\r\n" + delimiter, position)
        head_end = body.find(b"\r\n\r\n", position, end)
        if end < 0 or head_end < 0:
            raise MalformedForm("a part of the form is cut short")
        _add_part(form, body[position:head_end], head_end + 4, end, body)
        position = end + 2


def _add_part(form: Form, head: bytes, start: int, end: int, body: bytes) -> None:
    if _FILENAME.search(head):
        form.file_bytes += end - start
        return
    name = _NAME.search(head)
    if name is not None and end - start <= FIELD_BYTES_MOST:
        key = (name[1] if name[1] is not None else name[2]).decode("utf-8", "replace")
        form.fields[key] = body[start:end].decode("utf-8", "replace")
