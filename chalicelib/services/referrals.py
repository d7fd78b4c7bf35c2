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


def _ancestry(store: Store, tenant: str, parent: Node) -> referral.Ancestry:
    return referral.walk_ancestry(parent, lambda uid: store.users.node(tenant, uid))


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter, not security


def _current_user(store: Store, principal: Principal) -> User:
    user = store.users.get(principal.tenant, principal.subject)
    if user is None:
        raise Unauthorized("the user of this token does not exist", code="unknown_user")
    return user


def scan(principal: Principal, code: str) -> ScanResult:
    """The caller opened `code`: bind them to its sharer if the rules allow (first touch wins)."""
    store = get_store()
    tenant = principal.tenant
    share = shares.get(tenant, code)
    user = _current_user(store, principal)
    for attempt in range(MAX_ATTEMPTS):
        decision, hops = _decide(store, tenant, user, share.sharer)
        if decision.status is not BindStatus.BOUND:
            store.shares.count_scan(tenant, code)
            return _report(decision)
        data = {"upline": list(decision.upline), "share": code}
        event = AuditEvent(entity=f"user:{user.id}", action="user.bound", actor=principal.actor, data=data)
        outcome = store.users.set_upline(
            tenant, user, decision.upline, via=code, when=utcnow(), event=event, hops=hops, share_code=code
        )
        if outcome.committed:
            count("Bindings")
            logger.info("bound", extra={"tenant": tenant, "user": user.id, "upline": decision.upline})
            return ScanResult(BindStatus.BOUND, upline=decision.upline)
        _backoff(attempt)
        user = _current_user(store, principal)
    raise Conflict("the binding is busy, try again", code="busy")


def _decide(store: Store, tenant: str, user: User, sharer_id: str) -> tuple[Decision, tuple[Node, ...]]:
    if user.upline:
        return Decision(BindStatus.ALREADY_BOUND, upline=user.upline), ()
    sharer = store.users.node(tenant, sharer_id)
    if sharer is None:
        raise NotFound("the sharer of this code no longer exists", code="unknown_sharer")
    ancestry = _ancestry(store, tenant, sharer)
    return referral.decide_scan(user.node, sharer, ancestry), ancestry.hops


def _report(decision: Decision) -> ScanResult:
    if decision.status is BindStatus.REJECTED:
        reason = decision.reason.value if decision.reason else "rejected"
        count("BindRejected", reason=reason)
        return ScanResult(BindStatus.REJECTED, reason=reason)
    count("AlreadyBound")
    return ScanResult(BindStatus.ALREADY_BOUND, upline=decision.upline)


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
        outcome = store.users.set_upline(
            tenant, user, decision.upline, via=principal.actor, when=utcnow(), event=event, hops=ancestry.hops
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
    changed = 0
    for child in store.users.children(tenant, uid):
        for attempt in range(MAX_ATTEMPTS):
            current = store.users.get(tenant, child.id)
            wanted = referral.propagated_upline(parent, current.node) if current else None
            if current is None or wanted is None:
                break
            data = {"from": list(current.upline), "to": list(wanted), "cause": uid}
            event = AuditEvent(
                entity=f"user:{child.id}", action="user.upline_moved", actor="system:propagate", data=data
            )
            outcome = store.users.set_upline(
                tenant, current, wanted, via=current.bound_via or "", when=utcnow(), event=event
            )
            if outcome.committed:
                changed += 1
                break
            _backoff(attempt)
    return changed
