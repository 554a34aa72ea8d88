"""Provider secrets at rest: AES-256-GCM under SETTINGS_ENCRYPTION_KEY.

A sealed secret is a random 12-byte nonce followed by the ciphertext and its tag. The setting's id
is the associated data, so that a sealed secret copied onto another setting's row does not open.
keymgmt seals, the proxy opens; the clear value lives only in the proxy's memory.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """Sealed under another key, or changed since: never opened with a guess."""


def parse_key(text: str) -> bytes:
    """The key from its base64 text (standard or URL-safe alphabet); ValueError saying why not.

    The messages never quote the text: a malformed key is still mostly a key."""
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (make one with `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes, needs {KEY_BYTES}")
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._cipher = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox()"

    def encrypt(self, secret: str, setting_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)  # never reused: random per encryption
        return nonce + self._cipher.encrypt(nonce, secret.encode(), setting_id.encode())

    def decrypt(self, sealed: bytes, setting_id: str) -> str:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return self._cipher.decrypt(nonce, ciphertext, setting_id.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise SecretUnreadable(f"the secret of setting {setting_id} does not open") from None
