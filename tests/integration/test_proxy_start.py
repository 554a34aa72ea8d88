"""What the proxy does once at start, so that no call pays for it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from proxy.app import create_app
from shared import tokens
from shared.config import Settings


async def test_the_token_encodings_load_at_start_off_the_event_loop(
    aiohttp_server: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[tuple[str, bool]] = []

    def record(name: str) -> None:
        loaded.append((name, threading.current_thread() is threading.main_thread()))

    monkeypatch.setattr(tokens, "_encoding", record)
    await aiohttp_server(create_app(settings))
    assert sorted(loaded) == [("cl100k_base", False), ("o200k_base", False)]
