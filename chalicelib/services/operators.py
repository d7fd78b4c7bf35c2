"""Operator management (issue 10 §2): an owner lists, creates and changes the operators of their
own mini-program; every operator changes their own password.

Each change is one transaction with its audit records (never a password or a hash in them) and
moves the operator's token version on, so their tokens stop on the next request
(`chalicelib.api.http._check_operator`). Demoting or disabling an enabled owner names another
enabled owner whose item the transaction checks: a tenant never loses its last owner, even
when two owners demote each other at the same moment (see `chalicelib.operators`).
"""

from __future__ import annotations

from datetime import datetime

from chalicelib import auth, throttle
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Page, Principal, Role
from chalicelib.errors import InvalidInput, Missing, NotAllowed, NotAuthenticated, StateConflict, Throttled
from chalicelib.observability import count, logger
from chalicelib.operators import (
    Change,
    Operator,
    Written,
    apply,
    change_events,
    check_password,
    check_role,
    check_username,
    created_event,
    loses_an_owner,
    valid_username,
)
from chalicelib.retry import Retry
from chalicelib.settings import get_settings
from chalicelib.store import get_store

CHANGES = Retry.at_once(4)  # a read, then a conditional write; again when someone else wrote in between


def listing(principal: Principal, cursor: str | None, limit: int) -> Page[Operator]:
    """The caller's mini-program's operators, by username."""
    auth.require_role(principal, Role.OWNER)
    return get_store().admins.page(principal.tenant, cursor, limit)


def create(principal: Principal, username: str, password: str, role: Role) -> Operator:
    """A new operator of the caller's mini-program (409 `operator_exists` when the name is taken)."""
    auth.require_role(principal, Role.OWNER)
    check_username(username)
    check_password(password)
    check_role(role)
    now = utcnow()
    operator = Operator(principal.tenant, username, role, disabled=False, created_at=now)
    admin = Admin(principal.tenant, username, auth.hash_password(password), role)
    if not get_store().admins.create(admin, now, created_event(operator, principal.actor)):
        raise StateConflict("an operator with this username exists", code="operator_exists")
    count("OperatorsCreated")
    logger.info("operator created", extra={"tenant": principal.tenant, "operator": username, "role": role.value})
    return operator


def change(
    principal: Principal, username: str, *, role: Role | None, disabled: bool | None, password: str | None
) -> Operator:
    """Change an operator's role, state or password; any real change ends their tokens."""
    auth.require_role(principal, Role.OWNER)
    if role is None and disabled is None and password is None:
        raise InvalidInput("name at least one of role, disabled, password", code="empty_change")
    if role is not None:
        check_role(role)
    if password is not None:
        check_password(password)
    if not valid_username(username):
        raise Missing("operator not found", code="unknown_operator")
    wanted = Change(role=role, disabled=disabled, password=password is not None)
    password_hash = auth.hash_password(password) if password is not None else None
    store = get_store().admins
    gone: set[str] = set()  # owners named as keepers whom the check found changed
    for _ in CHANGES:
        before = store.operator(principal.tenant, username)
        if before is None:
            raise Missing("operator not found", code="unknown_operator")
        events = change_events(before, wanted, principal.actor)
        if not events:
            return before  # nothing changes: nothing written, tokens keep working
        after = apply(before, wanted)
        keeper = _keeper(principal.tenant, before, after, gone)
        written = store.change(before, after, events, utcnow(), password_hash=password_hash, keeper=keeper)
        if written is Written.DONE:
            count("OperatorsChanged")
            logger.info(
                "operator changed",
                extra={"tenant": principal.tenant, "operator": username, "actions": [e.action for e in events]},
            )
            return after
        if written is Written.NO_KEEPER and keeper is not None:
            gone.add(keeper)
    raise StateConflict("the operator changed at the same time; try again", code="concurrent_change")


def _keeper(tenant: str, before: Operator, after: Operator, gone: set[str]) -> str | None:
    """Another enabled owner, when the change takes one away (409 `last_owner` when none is)."""
    if not loses_an_owner(before, after):
        return None
    for name in get_store().admins.enabled_owners(tenant):
        if name != before.username and name not in gone:
            return name
    raise StateConflict("a mini-program keeps at least one enabled owner", code="last_owner")


def change_own_password(principal: Principal, current: str, new: str, source_ip: str) -> str:
    """Change the caller's password and return a fresh token: their other sessions end.

    A wrong current password is a failed login for the throttle (`throttle.ADMIN_PER_USER` and
    `ADMIN_PER_IP`): a stolen token cannot be used to guess the password behind it."""
    auth.require_role(principal)
    check_password(new)
    now = utcnow()
    user_key = f"{principal.tenant}#{principal.subject}"
    limits = ((throttle.ADMIN_PER_USER, user_key), (throttle.ADMIN_PER_IP, source_ip))
    _refuse_when_over(limits, now)
    store = get_store()
    admin = store.admins.get(principal.tenant, principal.subject)
    if admin is None or admin.disabled or admin.role is not principal.role or admin.token_version != principal.version:
        raise NotAuthenticated("your access changed; log in again", code="token_revoked")
    if not auth.check_password(admin.password_hash, current):
        for limit, subject in limits:
            store.nonces.hit(limit.key(subject, now), limit.window(now)[1])
        count("AdminLoginFailed")
        raise NotAllowed("the current password is wrong", code="wrong_password")
    before = Operator(admin.tenant, admin.username, admin.role, admin.disabled, None, admin.token_version)
    wanted = Change(password=True)
    after = apply(before, wanted)
    events = change_events(before, wanted, principal.actor)
    written = store.admins.change(before, after, events, now, password_hash=auth.hash_password(new))
    if written is not Written.DONE:
        raise NotAuthenticated("your access changed; log in again", code="token_revoked")
    count("OperatorPasswordsChanged")
    fresh = Principal(principal.tenant, principal.subject, after.role, version=after.token_version)
    return auth.issue_token(get_settings(), fresh, now)


def _refuse_when_over(limits: tuple[tuple[throttle.Limit, str], ...], now: datetime) -> None:
    nonces = get_store().nonces
    for limit, subject in limits:
        if nonces.hits(limit.key(subject, now)) >= limit.attempts:
            count("LoginsThrottled")
            raise Throttled(
                "too many attempts; try again later", code="too_many_attempts", retry_after=limit.retry_after(now)
            )
