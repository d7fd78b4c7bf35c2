"""Domain models shared by services and the store (no persistence concerns)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from chalicelib.referral import Node


class Role(StrEnum):
    USER = "user"
    OWNER = "owner"
    OPS = "ops"
    FINANCE = "finance"
    AUDITOR = "auditor"


ADMIN_ROLES = frozenset({Role.OWNER, Role.OPS, Role.FINANCE, Role.AUDITOR})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: from a verified token."""

    tenant: str
    subject: str  # user id, or admin username
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES

    @property
    def actor(self) -> str:
        """How the principal is named in the audit trail."""
        return f"admin:{self.subject}" if self.is_admin else f"user:{self.subject}"


@dataclass(frozen=True, slots=True)
class User:
    tenant: str
    id: str
    openid: str
    name: str
    created_at: datetime
    promoter: bool = True
    upline: tuple[str, ...] = ()
    bound_at: datetime | None = None
    bound_via: str | None = None
    version: int = 0

    @property
    def node(self) -> Node:
        return Node(self.id, self.upline)


@dataclass(frozen=True, slots=True)
class TeamMember:
    id: str
    name: str
    bound_at: datetime


@dataclass(frozen=True, slots=True)
class Share:
    tenant: str
    code: str
    sharer: str
    created_at: datetime
    product_id: str | None = None
    channel: str | None = None
    scans: int = 0
    binds: int = 0


@dataclass(frozen=True, slots=True)
class Admin:
    tenant: str
    username: str
    password_hash: str
    role: Role
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, before the store gives it a position and a hash in the trail."""

    entity: str  # e.g. "user:u_1a2b", "share:K7Q2"
    action: str  # e.g. "user.bound"
    actor: str  # "user:<id>", "admin:<name>", "system:<job>"
    data: Mapping[str, object] = field(default_factory=dict)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
