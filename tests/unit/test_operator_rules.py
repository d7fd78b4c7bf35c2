"""The operator rules (chalicelib/operators.py): valid names and passwords, audit events of a
change, and which changes take an enabled owner away."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib import operators as rules
from chalicelib.entities import Role
from chalicelib.errors import InvalidInput
from chalicelib.operators import Change, Operator

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def op(role: Role = Role.OWNER, disabled: bool = False) -> Operator:
    return Operator("wx1", "alice", role, disabled, WHEN, token_version=4)


@pytest.mark.parametrize("name", ["abc", "a.b-c_d", "x" * 32, "owner", "0ps"])
def test_valid_usernames(name: str) -> None:
    assert rules.valid_username(name)
    rules.check_username(name)


@pytest.mark.parametrize("name", ["ab", "x" * 33, "Alice", "a#b", "a b", "名字名字", "", "abc\n"])
def test_invalid_usernames(name: str) -> None:
    assert not rules.valid_username(name)
    with pytest.raises(InvalidInput) as err:
        rules.check_username(name)
    assert err.value.code == "invalid_username"


def test_passwords_need_10_to_256_characters() -> None:
    rules.check_password("x" * 10)
    rules.check_password("x" * 256)
    for bad in ("x" * 9, "x" * 257):
        with pytest.raises(InvalidInput):
            rules.check_password(bad)


def test_only_operator_roles() -> None:
    rules.check_role(Role.AUDITOR)
    with pytest.raises(InvalidInput):
        rules.check_role(Role.USER)


def test_one_event_per_real_change_in_a_fixed_order() -> None:
    events = rules.change_events(op(), Change(role=Role.OPS, disabled=True, password=True), "admin:bob")
    assert [(e.entity, e.action, e.actor) for e in events] == [
        ("operator:alice", "operator.role_changed", "admin:bob"),
        ("operator:alice", "operator.disabled", "admin:bob"),
        ("operator:alice", "operator.password_changed", "admin:bob"),
    ]
    assert events[0].data == {"from": "owner", "to": "ops"}
    assert [e.action for e in rules.change_events(op(disabled=True), Change(disabled=False), "a")] == [
        "operator.enabled"
    ]
    assert rules.change_events(op(), Change(role=Role.OWNER, disabled=False), "a") == []


def test_apply_moves_the_token_version_on() -> None:
    after = rules.apply(op(), Change(role=Role.FINANCE))
    assert (after.role, after.disabled, after.token_version, after.created_at) == (Role.FINANCE, False, 5, WHEN)
    assert rules.apply(op(), Change(disabled=True)).role is Role.OWNER


@pytest.mark.parametrize(
    ("before", "change", "loses"),
    [
        (op(), Change(role=Role.OPS), True),
        (op(), Change(disabled=True), True),
        (op(), Change(password=True), False),
        (op(disabled=True), Change(role=Role.OPS), False),  # was not an enabled owner
        (op(Role.OPS), Change(disabled=True), False),
        (op(Role.OPS), Change(role=Role.OWNER), False),
    ],
)
def test_which_changes_take_an_owner_away(before: Operator, change: Change, loses: bool) -> None:
    assert rules.loses_an_owner(before, rules.apply(before, change)) is loses


def test_creation_event_holds_no_secret() -> None:
    event = rules.created_event(op(Role.OPS), "admin:bob")
    assert (event.action, event.data) == ("operator.created", {"role": "ops", "disabled": False})
