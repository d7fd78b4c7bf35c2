"""Tokens and passwords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import auth
from chalicelib.entities import Principal, Role
from chalicelib.errors import NotAllowed, NotAuthenticated
from chalicelib.settings import Settings

SETTINGS = Settings.from_env(
    {"TABLE_PREFIX": "unit", "JWT_SECRET": "unit-secret-0123456789abcdefghij", "WECHAT_MODE": "sandbox"}
)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_token_round_trips() -> None:
    principal = Principal("wxa", "u1", Role.USER)
    token = auth.issue_token(SETTINGS, principal, datetime.now(UTC))
    assert auth.verify_token(SETTINGS, f"Bearer {token}") == principal


def test_an_expired_token_is_refused() -> None:
    token = auth.issue_token(SETTINGS, Principal("wxa", "u1", Role.USER), NOW - timedelta(days=30))
    with pytest.raises(NotAuthenticated) as raised:
        auth.verify_token(SETTINGS, f"Bearer {token}")
    assert raised.value.code == "token_expired"


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer a.b.c"])
def test_missing_or_malformed_tokens_are_refused(header: str | None) -> None:
    with pytest.raises(NotAuthenticated):
        auth.verify_token(SETTINGS, header)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = Settings.from_env(
        {"TABLE_PREFIX": "unit", "JWT_SECRET": "another-secret-0123456789abcdefgh", "WECHAT_MODE": "sandbox"}
    )
    token = auth.issue_token(other, Principal("wxa", "u1", Role.USER), datetime.now(UTC))
    with pytest.raises(NotAuthenticated):
        auth.verify_token(SETTINGS, f"Bearer {token}")


def test_roles() -> None:
    owner = Principal("wxa", "boss", Role.OWNER)
    assert auth.require_role(owner, Role.OWNER) is owner
    assert auth.require_role(Principal("wxa", "f", Role.FINANCE)).is_admin
    with pytest.raises(NotAllowed):
        auth.require_role(Principal("wxa", "u", Role.USER))
    with pytest.raises(NotAllowed):
        auth.require_role(Principal("wxa", "o", Role.OPS), Role.OWNER)
    assert owner.actor == "admin:boss"
    assert Principal("wxa", "u", Role.USER).actor == "user:u"


def test_passwords_are_hashed_with_argon2() -> None:
    hashed = auth.hash_password("correct horse")
    assert hashed.startswith("$argon2")
    assert auth.check_password(hashed, "correct horse")
    assert not auth.check_password(hashed, "wrong")
    assert not auth.check_password("not-a-hash", "x")


def test_the_dummy_hash_costs_as_much_as_a_real_one() -> None:
    assert auth.dummy_hash().startswith("$argon2id$")
    assert not auth.check_password(auth.dummy_hash(), "anything")
