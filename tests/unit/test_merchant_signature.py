"""Signing and verifying merchant requests (pure: HMAC-SHA256 over timestamp, nonce and body)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import signing
from chalicelib.signing import MAX_SKEW_SECONDS, Refusal

SECRET = "merchant-secret-1"
NOW = 1_700_000_000
BODY = b'{"a":1}'


def check(
    secret: str | None = SECRET,
    *,
    merchant: str = "shop1",
    timestamp: str = str(NOW),
    nonce: str = "nonce-0001",
    body: bytes = BODY,
    signature: str | None = None,
    now: float = NOW,
) -> Refusal | None:
    if signature is None:
        signature = signing.sign(SECRET, timestamp, nonce, body)
    return signing.check(
        secret, merchant=merchant, timestamp=timestamp, nonce=nonce, signature=signature, body=body, now=now
    )


def test_signature_matches_openssl() -> None:
    # printf '1700000000\nnonce-0001\n{"a":1}' | openssl dgst -sha256 -hmac 'merchant-secret-1' -hex
    expected = "24d26d31f118a921808bd390d85e8eb97c31c35c0099d89e74ab2f0dc1706eb2"
    assert signing.sign(SECRET, "1700000000", "nonce-0001", BODY) == expected


def test_a_correctly_signed_fresh_request_passes() -> None:
    assert check() is None
    assert check(signature=signing.sign(SECRET, str(NOW), "nonce-0001", BODY).upper()) is None


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"a":2}'},
        {"body": BODY + b" "},
        {"nonce": "nonce-0002"},
        {"timestamp": str(NOW + 1)},
        {"signature": "0" * 64},
        {"signature": "not hex at all"},
        {"signature": "签名"},
    ],
)
def test_anything_changed_after_signing_is_a_bad_signature(tamper: dict[str, object]) -> None:
    signed = {"signature": signing.sign(SECRET, str(NOW), "nonce-0001", BODY)}
    assert check(**{**signed, **tamper}) is Refusal.BAD_SIGNATURE  # type: ignore[arg-type]


def test_another_secret_or_an_unknown_merchant_is_a_bad_signature() -> None:
    assert check("another-secret") is Refusal.BAD_SIGNATURE
    assert check(None) is Refusal.BAD_SIGNATURE
    assert check("") is Refusal.BAD_SIGNATURE
    assert check(None, signature=signing.sign("", str(NOW), "nonce-0001", BODY)) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize("skew", [-MAX_SKEW_SECONDS, -1, 0, 1, MAX_SKEW_SECONDS])
def test_clock_skew_up_to_five_minutes_is_accepted(skew: int) -> None:
    assert check(now=NOW + skew) is None


@pytest.mark.parametrize("skew", [-MAX_SKEW_SECONDS - 1, MAX_SKEW_SECONDS + 1, -86_400, 10**9])
def test_a_request_more_than_five_minutes_away_is_stale(skew: int) -> None:
    assert check(now=NOW + skew) is Refusal.STALE_REQUEST
    assert Refusal.STALE_REQUEST.code == "stale_request"


@pytest.mark.parametrize("timestamp", ["1700000000.5", "-1700000000", "1e9", "１７００", " 1700000000"])
def test_a_timestamp_that_is_not_unix_seconds_is_stale_even_when_signed(timestamp: str) -> None:
    signature = signing.sign(SECRET, timestamp, "nonce-0001", BODY)
    assert check(timestamp=timestamp, signature=signature) is Refusal.STALE_REQUEST


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "has space1", "hash#tag01", "non-ascii-éé"])
def test_nonces_are_8_to_64_safe_characters(nonce: str) -> None:
    signature = signing.sign(SECRET, str(NOW), nonce, BODY)
    assert check(nonce=nonce, signature=signature) is Refusal.BAD_NONCE
    assert Refusal.BAD_NONCE.code == "bad_signature"


@pytest.mark.parametrize("nonce", ["12345678", "x" * 64, "A-b_9" * 3])
def test_good_nonces_pass(nonce: str) -> None:
    assert check(nonce=nonce, signature=signing.sign(SECRET, str(NOW), nonce, BODY)) is None


@pytest.mark.parametrize(
    "missing", [{"merchant": ""}, {"timestamp": ""}, {"nonce": ""}, {"signature": ""}, {"merchant": "a#b"}]
)
def test_missing_headers_are_refused_before_any_signing(missing: dict[str, str]) -> None:
    assert check(**missing) is Refusal.UNSIGNED  # type: ignore[arg-type]
    assert Refusal.UNSIGNED.code == "bad_signature"


def test_the_nonce_ttl_outlives_every_accepted_timestamp() -> None:
    # first seen at the earliest moment a request is accepted (its timestamp 5 min ahead), it is
    # still accepted 10 min later: the nonce must be remembered at least that long
    assert signing.NONCE_TTL_SECONDS >= 2 * MAX_SKEW_SECONDS


@given(body=st.binary(max_size=512), nonce=st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True))
def test_sign_then_check_round_trips(body: bytes, nonce: str) -> None:
    signature = signing.sign(SECRET, str(NOW), nonce, body)
    assert check(nonce=nonce, body=body, signature=signature) is None
    assert check("other", nonce=nonce, body=body, signature=signature) is Refusal.BAD_SIGNATURE
