"""Secrets at rest: AES-256-GCM under one deployment key, bound to what they belong to. Pure.

The key is 32 random bytes, given base64-encoded (`MERCHANT_KEY`; in AWS read from Secrets
Manager with the other secrets). A sealed value is `base64(nonce || ciphertext+tag)`; the
associated data (e.g. `merchant:<id>:<tenant>`) must match on opening, so a ciphertext copied to
another record does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """The key is malformed, or a sealed value is corrupt, altered or sealed for other data."""


def new_key() -> str:
    """A fresh key, base64-encoded (what `MERCHANT_KEY` holds)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _key(encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretBoxError("the key is not base64") from exc
    if len(key) != KEY_BYTES:
        raise SecretBoxError(f"the key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def seal(key: str, plaintext: str, associated: str) -> str:
    """Encrypt `plaintext` for `associated`; a new random nonce each time."""
    # function-local: cold start (cryptography loads only where secrets are sealed or opened)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only where secrets are opened

    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key(key)).encrypt(nonce, plaintext.encode(), associated.encode())
    return base64.b64encode(nonce + sealed).decode()


def open_sealed(key: str, sealed: str, associated: str) -> str:
    """The plaintext of `sealed`, or SecretBoxError when it was altered or belongs elsewhere."""
    # function-local: cold start (cryptography loads only where secrets are sealed or opened)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretBoxError("a sealed value is not base64") from exc
    if len(raw) <= NONCE_BYTES:
        raise SecretBoxError("a sealed value is too short")
    try:
        return AESGCM(_key(key)).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated.encode()).decode()
    except InvalidTag as exc:
        raise SecretBoxError("a sealed value does not open with this key for this record") from exc
