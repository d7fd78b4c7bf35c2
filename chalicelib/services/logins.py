"""Logins: mini-program users through code2Session, operators with a password."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from chalicelib import auth, throttle
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Role, User
from chalicelib.errors import NotAuthenticated, Throttled
from chalicelib.observability import count, logger
from chalicelib.services import tenants
from chalicelib.settings import get_settings
from chalicelib.store import get_store
from chalicelib.wechat import get_miniprogram


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    user: User
    created: bool


def _refuse_when_over(limit: throttle.Limit, subject: str, now: datetime) -> None:
    if get_store().nonces.hits(limit.key(subject, now)) >= limit.attempts:
        count("LoginsThrottled")
        raise Throttled(
            "too many attempts; try again later", code="too_many_attempts", retry_after=limit.retry_after(now)
        )


def _spend(limit: throttle.Limit, subject: str, now: datetime) -> None:
    """Count an attempt; refuse it when the window's limit is used up."""
    if get_store().nonces.hit(limit.key(subject, now), limit.window(now)[1]) > limit.attempts:
        count("LoginsThrottled")
        raise Throttled(
            "too many attempts; try again later", code="too_many_attempts", retry_after=limit.retry_after(now)
        )


def user_id_for(tenant: str, openid: str) -> str:
    """A stable user id for an openid: the same person always gets the same id, no lookup."""
    return "u" + hashlib.sha256(f"{tenant}:{openid}".encode()).hexdigest()[:15]


def login(code: str, appid: str | None, name: str | None = None, source_ip: str | None = None) -> LoginResult:
    """Exchange a `wx.login` code for a token; the user is created on first login. Logins from
    one address are limited (`throttle.LOGIN_PER_IP`)."""
    tenant = tenants.resolve(appid)
    if source_ip is not None:
        _spend(throttle.LOGIN_PER_IP, source_ip, utcnow())
    session = get_miniprogram().code2session(tenant.id, code)
    uid = user_id_for(tenant.id, session.openid)
    store = get_store()
    now = utcnow()
    user = store.users.get(tenant.id, uid)
    created = False
    if user is None:
        default_name = code[4:] if get_settings().sandbox and code.startswith("dev-") else f"微信用户{uid[-4:]}"
        new = User(tenant=tenant.id, id=uid, openid=session.openid, name=name or default_name, created_at=now)
        event = AuditEvent(entity=f"user:{uid}", action="user.created", actor=f"user:{uid}", data={"name": new.name})
        created = store.users.create(new, event)
        user = store.users.get(tenant.id, uid) or new
    principal = Principal(tenant=tenant.id, subject=uid, role=Role.USER)
    count("Logins")
    logger.info("login", extra={"tenant": tenant.id, "user": uid, "new_user": created})
    return LoginResult(token=auth.issue_token(get_settings(), principal, now), user=user, created=created)


def admin_login(username: str, password: str, appid: str | None, source_ip: str = "unknown") -> str:
    """A token for an operator whose password matches; one vague error for every failure.

    After `throttle.ADMIN_PER_USER` failures for a username (or `ADMIN_PER_IP` from an address)
    in a window, every attempt waits for the window's end (429 `too_many_attempts`), even with
    the right password, so the limit cannot be used to probe it."""
    tenant = tenants.resolve(appid)
    now = utcnow()
    user_key = f"{tenant.id}#{username}"
    _refuse_when_over(throttle.ADMIN_PER_USER, user_key, now)
    _refuse_when_over(throttle.ADMIN_PER_IP, source_ip, now)
    admin = get_store().admins.get(tenant.id, username)
    valid = auth.check_password(admin.password_hash if admin else auth.dummy_hash(), password)
    if admin is None or admin.disabled or not valid:
        count("AdminLoginFailed")
        nonces = get_store().nonces
        nonces.hit(throttle.ADMIN_PER_USER.key(user_key, now), throttle.ADMIN_PER_USER.window(now)[1])
        nonces.hit(throttle.ADMIN_PER_IP.key(source_ip, now), throttle.ADMIN_PER_IP.window(now)[1])
        raise NotAuthenticated("wrong username or password", code="invalid_credentials")
    count("AdminLogins")
    principal = Principal(tenant=tenant.id, subject=username, role=admin.role, version=admin.token_version)
    return auth.issue_token(get_settings(), principal, utcnow())
