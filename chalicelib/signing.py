"""Signed server-to-server requests (the merchant order API). Pure, no I/O.

A merchant signs `timestamp + "\\n" + nonce + "\\n" + raw body` with HMAC-SHA256 and its own
secret and sends the lowercase hex digest in `X-Signature`, with `X-Timestamp` (unix seconds)
and `X-Nonce` (8-64 letters, digits, `_` or `-`). The server refuses a request whose signature
does not match (compared in constant time), whose timestamp is more than five minutes away
from its clock, or whose nonce it has seen (the store remembers nonces for `NONCE_TTL_SECONDS`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import Enum

MAX_SKEW_SECONDS = 300
# A request signed at t is accepted while the server's clock reads t-300..t+300: its nonce must
# be remembered for at least those 10 minutes after it is first seen, plus slack.
NONCE_TTL_SECONDS = 2 * MAX_SKEW_SECONDS + 300

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Refusal(Enum):
    """Why a signed request is refused: (error code, message)."""

    UNSIGNED = ("bad_signature", "X-Merchant-Id, X-Timestamp, X-Nonce and X-Signature are required")
    BAD_NONCE = ("bad_signature", "X-Nonce must be 8 to 64 letters, digits, '_' or '-'")
    BAD_SIGNATURE = ("bad_signature", "unknown merchant or bad signature")
    STALE_REQUEST = ("stale_request", f"X-Timestamp is more than {MAX_SKEW_SECONDS} s away from the server's clock")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


def string_to_sign(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of a request."""
    return hmac.new(secret.encode(), string_to_sign(timestamp, nonce, body), hashlib.sha256).hexdigest()


def valid_merchant_id(merchant: str) -> bool:
    return _TOKEN.fullmatch(merchant) is not None


def check(
    secret: str | None,
    *,
    merchant: str,
    timestamp: str,
    nonce: str,
    signature: str,
    body: bytes,
    now: float,
) -> Refusal | None:
    """Why the request must be refused, or None. `secret` is None (or empty) for an unknown merchant,
    whose request is signed and compared all the same, so it takes as long as a known one's.

    The signature is checked before the clock, so only the holder of the secret learns that a
    request was stale.
    """
    if not (merchant and timestamp and nonce and signature) or not valid_merchant_id(merchant):
        return Refusal.UNSIGNED
    if _NONCE.fullmatch(nonce) is None:
        return Refusal.BAD_NONCE
    expected = sign(secret or "", timestamp, nonce, body).encode()
    matches = hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))
    if not secret or not matches:
        return Refusal.BAD_SIGNATURE
    if _TIMESTAMP.fullmatch(timestamp) is None or abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return Refusal.STALE_REQUEST
    return None
