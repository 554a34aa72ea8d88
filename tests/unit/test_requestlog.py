"""Logged bodies: capped at 1 MB on a character boundary, without NUL, flagged when cut."""

from __future__ import annotations

from proxy.requestlog import MAX_CONTENT_BYTES, StreamRecord, capped


def test_a_body_within_the_cap_is_kept_whole() -> None:
    assert capped(b'{"a": "\xc3\xa9"}') == ('{"a": "é"}', False)


def test_a_body_past_the_cap_is_cut_between_characters() -> None:
    text, truncated = capped("é" * MAX_CONTENT_BYTES)  # 2 bytes each
    assert truncated
    assert len(text.encode()) == MAX_CONTENT_BYTES and set(text) == {"é"}
    text, truncated = capped(b"a" + "é".encode() * (MAX_CONTENT_BYTES // 2))
    assert truncated and len(text.encode()) == MAX_CONTENT_BYTES - 1  # the split é left out


def test_nul_and_invalid_bytes_never_reach_postgres() -> None:
    assert capped(b"a\x00b\xffc") == ("ab\ufffdc", False)


def test_a_stream_record_assembles_the_text_and_stops_at_its_bound() -> None:
    record = StreamRecord()
    record.feed(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n')
    record.feed(b'data: {"choices": [{"delta": {"content": "lo"}}]}\n\ndata: [DONE]\n\n')
    assert (record.text(), record.cut) == ("Hello", False)
    record.feed(b"x" * (8 * MAX_CONTENT_BYTES))
    assert record.cut and record.text() == "Hello"
