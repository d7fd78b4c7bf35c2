"""Operators (管理员) of a tenant's console: what a valid operator is, what a change to one means
for the audit trail, and when a change would leave the tenant without an owner. Pure, no I/O.

- A username is 3-32 of `a-z 0-9 _ . -` (it is part of the item key `tenant#username`, so `#`
  can never appear); a password has at least `MIN_PASSWORD` characters, as the admin CLI asks.
- Every change of access bumps the operator's token version, so tokens issued before it stop
  on their next request; a change that changes nothing writes nothing.
- A tenant always keeps at least one enabled owner: a change that turns the last enabled owner
  into something else is refused. The store proves "another enabled owner exists" with a
  condition on that owner's item in the same transaction, so two owners demoting each other at
  once cannot both succeed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chalicelib.entities import ADMIN_ROLES, AuditEvent, Role
from chalicelib.errors import InvalidInput

USERNAME = re.compile(r"[a-z0-9_.\-]{3,32}")
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # the login body's limit: a longer password could never log in


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator as the console sees it: no password hash here."""

    tenant: str
    username: str
    role: Role
    disabled: bool
    created_at: datetime | None
    token_version: int = 0

    @property
    def enabled_owner(self) -> bool:
        return self.role is Role.OWNER and not self.disabled


@dataclass(frozen=True, slots=True)
class Change:
    """What a PATCH asks for; None leaves a field as it is."""

    role: Role | None = None
    disabled: bool | None = None
    password: bool = False  # a new password (its hash is the store's business, never the trail's)


class Written(StrEnum):
    """How the store's write of a change ended."""

    DONE = "done"
    STALE = "stale"  # the operator changed (or vanished) since it was read: read again
    NO_KEEPER = "no_keeper"  # the owner who was to stay is no longer an enabled owner


def valid_username(username: str) -> bool:
    return USERNAME.fullmatch(username) is not None


def check_username(username: str) -> None:
    if not valid_username(username):
        raise InvalidInput("the username must be 3-32 of a-z, 0-9, _ . -", code="invalid_username")


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"the password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters", code="invalid_password")


def check_role(role: Role) -> None:
    if role not in ADMIN_ROLES:
        raise InvalidInput("the role must be owner, ops, finance or auditor", code="invalid_role")


def entity(username: str) -> str:
    return f"operator:{username}"


def created_event(operator: Operator, actor: str) -> AuditEvent:
    data = {"role": operator.role.value, "disabled": operator.disabled}
    return AuditEvent(entity(operator.username), "operator.created", actor, data)


def change_events(before: Operator, change: Change, actor: str) -> list[AuditEvent]:
    """One audit event per thing that really changes, in a fixed order; empty when nothing does."""
    name = entity(before.username)
    events: list[AuditEvent] = []
    if change.role is not None and change.role is not before.role:
        data = {"from": before.role.value, "to": change.role.value}
        events.append(AuditEvent(name, "operator.role_changed", actor, data))
    if change.disabled is not None and change.disabled != before.disabled:
        events.append(AuditEvent(name, "operator.disabled" if change.disabled else "operator.enabled", actor, {}))
    if change.password:
        events.append(AuditEvent(name, "operator.password_changed", actor, {}))
    return events


def apply(before: Operator, change: Change) -> Operator:
    """The operator after the change (the token version moves on)."""
    return Operator(
        tenant=before.tenant,
        username=before.username,
        role=change.role if change.role is not None else before.role,
        disabled=change.disabled if change.disabled is not None else before.disabled,
        created_at=before.created_at,
        token_version=before.token_version + 1,
    )


def loses_an_owner(before: Operator, after: Operator) -> bool:
    """True when the change takes an enabled owner away (another must remain)."""
    return before.enabled_owner and not after.enabled_owner
