"""Scans, bindings, operator rebinds and the propagation of uplines after a move."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from chalicelib import referral
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Role, User
from chalicelib.errors import BadRequest, Conflict, NotFound, Unauthorized
from chalicelib.observability import count, logger
from chalicelib.referral import BindStatus, Decision, Node
from chalicelib.services import shares
from chalicelib.store import Store, get_store

MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class ScanResult:
    status: BindStatus
    reason: str | None = None
    upline: tuple[str, ...] = ()


_ANCESTRY_TTL = 30.0
_ancestry_cache: dict[tuple[str, str], tuple[referral.Ancestry, Node, float]] = {}


def _ancestry(store: Store, tenant: str, parent: Node) -> referral.Ancestry:
    return referral.walk_ancestry(parent, lambda uid: store.users.node(tenant, uid))


def _sharer_ancestry(store: Store, tenant: str, sharer_id: str, fresh: bool) -> tuple[Node, referral.Ancestry]:
    """The sharer and their ancestry, cached briefly: the bind transaction re-checks every hop."""
    key = (tenant, sharer_id)
    cached = _ancestry_cache.get(key)
    if cached and not fresh and cached[2] > time.monotonic():
        return cached[1], cached[0]
    sharer = store.users.node(tenant, sharer_id)
    if sharer is None:
        raise NotFound("the sharer of this code no longer exists", code="unknown_sharer")
    ancestry = _ancestry(store, tenant, sharer)
    if len(_ancestry_cache) > 10_000:
        _ancestry_cache.clear()
    _ancestry_cache[key] = (ancestry, sharer, time.monotonic() + _ANCESTRY_TTL)
    return sharer, ancestry


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter, not security


def scan(principal: Principal, code: str) -> ScanResult:
    """The caller opened `code`: bind them to its sharer if the rules allow (first touch wins).

    Optimistic: the caller is assumed unbound and bound in one transaction without reading
    them first; the transaction's conditions say when that was wrong.
    """
    store = get_store()
    tenant = principal.tenant
    share = shares.get(tenant, code)
    fresh = False
    for attempt in range(MAX_ATTEMPTS):
        sharer, ancestry = _sharer_ancestry(store, tenant, share.sharer, fresh)
        decision = referral.decide_scan(Node(principal.subject), sharer, ancestry)
        if decision.status is not BindStatus.BOUND:
            return _refused(store, principal, code, decision)
        data = {"upline": list(decision.upline), "share": code}
        event = AuditEvent(entity=f"user:{principal.subject}", action="user.bound", actor=principal.actor, data=data)
        outcome = store.users.bind(
            tenant, principal.subject, decision.upline, via=code, when=utcnow(), event=event, hops=ancestry.hops
        )
        if outcome.committed:
            count("Bindings")
            logger.info("bound", extra={"tenant": tenant, "user": principal.subject, "upline": decision.upline})
            return ScanResult(BindStatus.BOUND, upline=decision.upline)
        if 0 in outcome.failed_items:  # the caller is bound already (or gone)
            return _refused(store, principal, code, decision)
        fresh = bool(outcome.failed_items)  # a hop changed: walk again from the table
        _backoff(attempt)
    raise Conflict("the binding is busy, try again", code="busy")


def _refused(store: Store, principal: Principal, code: str, decision: Decision) -> ScanResult:
    """Report a scan that bound nothing; the caller's real state decides already_bound first."""
    user = _current_user(store, principal)
    store.shares.count_scan(principal.tenant, code)
    if user.upline:
        count("AlreadyBound")
        return ScanResult(BindStatus.ALREADY_BOUND, upline=user.upline)
    if decision.status is BindStatus.REJECTED:
        reason = decision.reason.value if decision.reason else "rejected"
        count("BindRejected", reason=reason)
        return ScanResult(BindStatus.REJECTED, reason=reason)
    raise Conflict("the binding is busy, try again", code="busy")


def _current_user(store: Store, principal: Principal) -> User:
    user = store.users.get(principal.tenant, principal.subject)
    if user is None:
        raise Unauthorized("the user of this token does not exist", code="unknown_user")
    return user


def rebind(principal: Principal, uid: str, parent_id: str, reason: str) -> User:
    """An operator moves `uid` under `parent_id`; the downline follows in the background."""
    require_role(principal, Role.OWNER, Role.OPS)
    if not reason.strip():
        raise BadRequest("a reason is required", code="reason_required")
    store = get_store()
    tenant = principal.tenant
    for attempt in range(MAX_ATTEMPTS):
        user = store.users.get(tenant, uid)
        parent = store.users.node(tenant, parent_id)
        if user is None or parent is None:
            raise NotFound("user or new parent not found", code="unknown_user")
        ancestry = _ancestry(store, tenant, parent)
        decision = referral.decide_rebind(user.node, parent, ancestry)
        if decision.status is BindStatus.REJECTED:
            code = decision.reason.value if decision.reason else "rejected"
            raise Conflict(f"cannot move this user: {code}", code=code)
        data = {"from": list(user.upline), "to": list(decision.upline), "reason": reason.strip()}
        event = AuditEvent(entity=f"user:{uid}", action="user.rebound", actor=principal.actor, data=data)
        outcome = store.users.move(
            tenant, user, decision.upline, when=utcnow(), event=event, hops=ancestry.hops, rebind=True
        )
        if outcome.committed:
            count("Rebinds")
            return store.users.get(tenant, uid) or user
        _backoff(attempt)
    raise Conflict("the user changed while moving, try again", code="busy")


def propagate(tenant: str, uid: str) -> int:
    """After `uid`'s upline changed, give each direct child the upline below it; returns changes.

    Reads current state, so replays and out-of-order deliveries converge on the same result.
    Each child's own change then propagates one level further, and stops where nothing moves.
    """
    store = get_store()
    parent = store.users.node(tenant, uid)
    if parent is None:
        return 0
    return sum(_propagate_to(store, tenant, parent, child.id) for child in store.users.children(tenant, uid))


def _propagate_to(store: Store, tenant: str, parent: Node, child_id: str) -> int:
    for attempt in range(MAX_ATTEMPTS):
        current = store.users.get(tenant, child_id)
        wanted = referral.propagated_upline(parent, current.node) if current else None
        if current is None or wanted is None:
            return 0
        data = {"from": list(current.upline), "to": list(wanted), "cause": parent.id}
        event = AuditEvent(entity=f"user:{child_id}", action="user.upline_moved", actor="system:propagate", data=data)
        if store.users.move(tenant, current, wanted, when=utcnow(), event=event).committed:
            return 1
        _backoff(attempt)
    raise Conflict(f"could not move {child_id}, will retry", code="busy")
