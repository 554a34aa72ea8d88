"""The cipher of provider secrets: round trip, a fresh nonce each time, tampering detected."""

from __future__ import annotations

import base64
import os

import pytest

from shared.config import ConfigError, Settings
from shared.secrets import KEY_BYTES, NONCE_BYTES, SecretBox, SecretUnreadable, parse_key

KEY = os.urandom(KEY_BYTES)


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    box = SecretBox(KEY)
    first = box.encrypt("sk-clear-value", "setting-1")
    second = box.encrypt("sk-clear-value", "setting-1")
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert b"sk-clear-value" not in first
    assert box.decrypt(first, "setting-1") == box.decrypt(second, "setting-1") == "sk-clear-value"


@pytest.mark.parametrize("position", [0, NONCE_BYTES, -1])
def test_a_changed_byte_is_detected(position: int) -> None:
    box = SecretBox(KEY)
    sealed = bytearray(box.encrypt("sk-clear-value", "setting-1"))
    sealed[position] ^= 0x01
    with pytest.raises(SecretUnreadable):
        box.decrypt(bytes(sealed), "setting-1")


def test_a_secret_moved_to_another_setting_does_not_open() -> None:
    box = SecretBox(KEY)
    with pytest.raises(SecretUnreadable):
        box.decrypt(box.encrypt("sk-clear-value", "setting-1"), "setting-2")


def test_another_key_or_a_truncated_blob_does_not_open() -> None:
    sealed = SecretBox(KEY).encrypt("sk-clear-value", "s")
    with pytest.raises(SecretUnreadable):
        SecretBox(os.urandom(KEY_BYTES)).decrypt(sealed, "s")
    with pytest.raises(SecretUnreadable):
        SecretBox(KEY).decrypt(sealed[:NONCE_BYTES], "s")


def test_repr_never_shows_the_key() -> None:
    assert base64.b64encode(KEY).decode() not in repr(SecretBox(KEY))


@pytest.mark.parametrize("alphabet", [base64.b64encode, base64.urlsafe_b64encode])
def test_the_key_is_32_bytes_of_base64(alphabet) -> None:  # type: ignore[no-untyped-def]
    assert parse_key(alphabet(KEY).decode()) == KEY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(os.urandom(16)).decode(), "16 bytes"),
        (base64.b64encode(os.urandom(33)).decode(), "33 bytes"),
    ],
)
def test_a_bad_key_is_one_line_naming_the_variable(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SETTINGS_ENCRYPTION_KEY": text})
    message = str(caught.value)
    assert message.startswith("SETTINGS_ENCRYPTION_KEY: ")
    assert reason in message and "\n" not in message
    assert text not in message  # even a malformed key is not echoed


def test_the_key_is_optional_and_never_in_the_settings_repr() -> None:
    assert Settings.from_env({}).settings_encryption_key == b""
    text = base64.b64encode(KEY).decode()
    settings = Settings.from_env({"SETTINGS_ENCRYPTION_KEY": text})
    assert settings.settings_encryption_key == KEY
    assert text not in repr(settings) and repr(KEY) not in repr(settings)
