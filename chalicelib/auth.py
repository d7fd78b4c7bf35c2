"""Tokens (JWT, HS256) and admin password hashing (argon2)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from functools import lru_cache

from chalicelib.entities import ADMIN_ROLES, Principal, Role
from chalicelib.errors import NotAllowed, NotAuthenticated
from chalicelib.settings import Settings

ISSUER = "fenxiao"
ALGORITHM = "HS256"


def issue_token(settings: Settings, principal: Principal, now: datetime) -> str:
    """A signed token naming the tenant, the subject and the role."""
    # function-local: cold start (PyJWT loads cryptography)
    import jwt

    ttl = settings.admin_jwt_ttl_seconds if principal.is_admin else settings.jwt_ttl_seconds
    claims = {
        "iss": ISSUER,
        "sub": principal.subject,
        "ten": principal.tenant,
        "role": principal.role.value,
        "ver": principal.version,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def verify_token(settings: Settings, authorization: str | None) -> Principal:
    """The principal in a `Bearer` token, or NotAuthenticated."""
    # function-local: cold start (PyJWT loads cryptography)
    import jwt

    if not authorization or not authorization.startswith("Bearer "):
        raise NotAuthenticated("a Bearer token is required", code="missing_token")
    token = authorization[len("Bearer ") :].strip()
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise NotAuthenticated("the token has expired", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise NotAuthenticated("the token is not valid", code="invalid_token") from exc
    try:
        version = claims.get("ver", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("ver")
        return Principal(
            tenant=str(claims["ten"]), subject=str(claims["sub"]), role=Role(claims["role"]), version=version
        )
    except (KeyError, ValueError) as exc:
        raise NotAuthenticated("the token is not valid", code="invalid_token") from exc


def require_role(principal: Principal, *roles: Role) -> Principal:
    """The principal if it holds one of `roles` (any admin role when none are named)."""
    allowed = set(roles) if roles else set(ADMIN_ROLES)
    if principal.role not in allowed:
        raise NotAllowed("this action needs the role " + " or ".join(sorted(r.value for r in allowed)))
    return principal


def hash_password(password: str) -> str:
    # function-local: cold start (argon2 loads its C library)
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def check_password(password_hash: str, password: str) -> bool:
    # function-local: cold start (argon2 loads its C library)
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A real argon2 hash of a random password: verified against when a username is unknown,
    so that the response time does not tell which usernames exist."""
    return hash_password(secrets.token_urlsafe(16))
