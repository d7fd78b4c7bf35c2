"""Sealed secrets open only with their key, for the record they were sealed for, unaltered."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import secretbox

KEY = base64.b64encode(bytes(range(32, 64))).decode()
OTHER_KEY = base64.b64encode(bytes(range(32))).decode()  # fixed: xdist workers must collect the same ids


@given(st.text(min_size=1, max_size=200), st.text(max_size=80))
def test_what_is_sealed_opens_to_itself(plaintext: str, associated: str) -> None:
    sealed = secretbox.seal(KEY, plaintext, associated)
    assert secretbox.open_sealed(KEY, sealed, associated) == plaintext


def test_each_seal_is_different() -> None:
    assert secretbox.new_key() != secretbox.new_key()
    assert secretbox.seal(KEY, "same", "m") != secretbox.seal(KEY, "same", "m")


@pytest.mark.parametrize(
    ("key", "associated", "tamper"),
    [
        (OTHER_KEY, "merchant:shop1:wxA", False),  # another deployment's key
        (KEY, "merchant:shop1:wxB", False),  # copied to another tenant's record
        (KEY, "merchant:shop1:wxA", True),  # one bit flipped in the table
    ],
)
def test_a_sealed_value_does_not_open_elsewhere(key: str, associated: str, tamper: bool) -> None:
    sealed = secretbox.seal(KEY, "shop1-secret-0123456789", "merchant:shop1:wxA")
    if tamper:
        raw = bytearray(base64.b64decode(sealed))
        raw[-1] ^= 1
        sealed = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.open_sealed(key, sealed, associated)


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_malformed_keys_and_values_are_refused(key: str) -> None:
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.seal(key, "x", "a")
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.open_sealed(KEY, "AAAA", "a")
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.open_sealed(KEY, "%%%", "a")
