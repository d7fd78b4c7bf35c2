"""Domain models shared by services and the store (no persistence concerns)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

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
    version: int = 0  # an operator's token version: disabling or changing them bumps it

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
    coupon_id: str | None = None  # a coupon the friend who opens the share may claim


@dataclass(frozen=True, slots=True)
class Admin:
    tenant: str
    username: str
    password_hash: str
    role: Role
    disabled: bool = False
    token_version: int = 0  # tokens issued before the last change of access carry an older one


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class MerchantCredential:
    """A merchant of the order API: bound to one tenant, its secrets sealed (see `secretbox`)."""

    merchant: str
    tenant: str
    name: str
    current: str  # sealed secret
    previous: str | None = None  # sealed secret before the last rotation, valid until retired
    disabled: bool = False
    version: int = 1

    @property
    def associated(self) -> str:
        """What its sealed secrets are bound to: they open for this merchant of this tenant only."""
        return f"merchant:{self.merchant}:{self.tenant}"


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


@dataclass(frozen=True, slots=True)
class Product:
    """A product with its server-side price (orders are priced from here, never by the client)."""

    tenant: str
    id: str
    name: str
    price_fen: int
    active: bool = True
    repurchase_days: int | None = None
    created_at: datetime | None = None  # None when read from the catalog index (not projected)
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CouponTemplate:
    """A "spend X, save Y" coupon (满减券): what a user claims and an order redeems.

    Valid from `valid_from` (inclusive) to `valid_until` (exclusive), both aware UTC. Applies to
    the order lines of `product_ids`, or to every line when that is empty.
    """

    tenant: str
    coupon_id: str
    name: str
    threshold_fen: int
    amount_fen: int
    valid_from: datetime
    valid_until: datetime
    per_user_limit: int = 1
    total_limit: int | None = None
    product_ids: tuple[str, ...] = ()
    created_at: datetime | None = None
    issued: int = 0  # claims so far


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # in the user's wallet, unused
    USED = "used"  # redeemed by an order


@dataclass(frozen=True, slots=True)
class CouponClaim:
    """One coupon a user claimed: their `number`-th of the template (1..per_user_limit)."""

    tenant: str
    coupon_id: str
    user: str
    number: int
    state: ClaimState
    claimed_at: datetime
    order_id: str | None = None
    used_at: datetime | None = None


class ClaimRefusal(StrEnum):
    """Why a user could not claim a coupon."""

    LIMIT_REACHED = "limit_reached"  # they hold per_user_limit claims of it
    SOLD_OUT = "sold_out"  # total_limit claims were issued


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """One stored version of a commission plan, as operators see it."""

    tenant: str
    version: int
    body: dict[str, Any]
    created_at: datetime
    created_by: str
    activated_at: datetime | None
