"""Scans, bindings, operator moves and the propagation of uplines after a move.

A scan is one conditional update of the caller (bound only if unbound), decided against a
recently read walk of the sharer's ancestry (no self-binding, no cycle at any depth).

Cycle safety without transactions on ancestors: every change of a parent edge (a scan's
binding, an operator's move) is *written first and validated after* with a fresh walk up
the new parent's ancestry (the users stream validates every new edge; operator moves are
also validated before answering). Of two concurrent changes that would close a cycle
together, the later write's validation always sees the earlier write, so at least one of
them finds the cycle and reverts itself. No ancestor item is locked, so a popular
promoter's code scales like any other. Uplines copied from a stale read are corrected the
same way, and the users stream carries every change down to the moved user's downline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chalicelib import caches, referral
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Role, User
from chalicelib.errors import InvalidInput, Missing, NotAuthenticated, StateConflict
from chalicelib.observability import count, logger
from chalicelib.referral import BindStatus, Decision, Node
from chalicelib.retry import Retry
from chalicelib.services import shares
from chalicelib.store import Store, get_store

UPLINE_MOVES = Retry(tries=8, first_s=0.01)  # conditional moves of one user racing others: jittered
_ANCESTRY_TTL = 30.0
_ancestry_cache: dict[tuple[str, str], tuple[Node, referral.Ancestry, float]] = caches.register(
    f"{__name__}._ancestry_cache", {}
)


@dataclass(frozen=True, slots=True)
class ScanResult:
    status: BindStatus
    reason: str | None = None
    upline: tuple[str, ...] = ()


def _walk(store: Store, tenant: str, parent_id: str) -> tuple[Node, referral.Ancestry]:
    """The parent and all its ancestors, read fresh (strongly consistent)."""
    parent = store.users.node(tenant, parent_id)
    if parent is None:
        raise Missing("the promoter no longer exists", code="unknown_sharer")
    ancestry = referral.walk_ancestry(parent, lambda uid: store.users.node(tenant, uid))
    _ancestry_cache[(tenant, parent_id)] = (parent, ancestry, time.monotonic() + _ANCESTRY_TTL)
    return parent, ancestry


def _cached_walk(store: Store, tenant: str, parent_id: str) -> tuple[Node, referral.Ancestry]:
    """A recent walk, good enough to decide before writing: the write is validated after."""
    cached = _ancestry_cache.get((tenant, parent_id))
    if cached and cached[2] > time.monotonic():
        return cached[0], cached[1]
    if len(_ancestry_cache) > 10_000:
        _ancestry_cache.clear()
    return _walk(store, tenant, parent_id)


def scan(principal: Principal, code: str) -> ScanResult:
    """The caller opened `code`: bind them to its sharer if the rules allow (first touch wins).

    Optimistic: the caller is assumed unbound and bound with one conditional update, without
    reading them first; the condition says when that was wrong.
    """
    store = get_store()
    tenant, uid = principal.tenant, principal.subject
    share = shares.get(tenant, code)
    sharer, ancestry = _cached_walk(store, tenant, share.sharer)
    decision = referral.decide_scan(Node(uid), sharer, ancestry)
    if decision.status is not BindStatus.BOUND:
        return _refused(store, principal, code, decision)
    data = {"upline": list(decision.upline), "share": code}
    event = AuditEvent(entity=f"user:{uid}", action="user.bound", actor=principal.actor, data=data)
    if not store.users.bind(tenant, uid, decision.upline, via=code, when=utcnow(), event=event):
        return _refused(store, principal, code, decision)
    count("Bindings")
    logger.info("bound", extra={"tenant": tenant, "user": uid, "upline": decision.upline})
    return ScanResult(BindStatus.BOUND, upline=decision.upline)


def validate(tenant: str, uid: str, written: tuple[str, ...]) -> bool:
    """Re-check a new parent edge against fresh state (the users stream calls this).

    Reverts the edge if it closed a cycle, corrects an upline copied from a stale cache;
    returns False when it reverted. Idempotent: both writes are conditional on `written`.
    """
    if not written:
        return True
    return _validate(get_store(), tenant, uid, written[0], written, "system:validate") is not None


def _validate(
    store: Store, tenant: str, uid: str, parent_id: str, written: tuple[str, ...], actor: str
) -> tuple[str, ...] | None:
    """After writing `uid` under `parent_id`: revert on a cycle (None), correct a stale upline."""
    parent, ancestry = _walk(store, tenant, parent_id)
    now = utcnow()
    if uid in ancestry.ancestors or uid == parent_id:
        data = {"upline": list(written), "reason": "cycle"}
        event = AuditEvent(entity=f"user:{uid}", action="user.bind_reverted", actor=actor, data=data)
        store.users.move(tenant, uid, written, (), when=now, event=event)
        logger.warning("binding reverted: concurrent change closed a cycle", extra={"user": uid})
        return None
    wanted = referral.upline_below(parent)
    if wanted != written:
        data = {"from": list(written), "to": list(wanted), "cause": parent_id}
        event = AuditEvent(entity=f"user:{uid}", action="user.upline_moved", actor="system:validate", data=data)
        store.users.move(tenant, uid, written, wanted, when=now, event=event)
    return wanted


def _refused(store: Store, principal: Principal, code: str, decision: Decision) -> ScanResult:
    """Report a scan that bound nothing; the caller's real state decides already_bound first."""
    user = _current_user(store, principal)
    store.shares.count_scan(principal.tenant, code, utcnow())
    if user.upline:
        count("AlreadyBound")
        return ScanResult(BindStatus.ALREADY_BOUND, upline=user.upline)
    if decision.status is BindStatus.REJECTED and decision.reason is not None:
        return _report_rejected(decision.reason)
    raise StateConflict("the binding is busy, try again", code="busy")


def _report_rejected(reason: referral.RejectReason) -> ScanResult:
    count("BindRejected", reason=reason.value)
    return ScanResult(BindStatus.REJECTED, reason=reason.value)


def _current_user(store: Store, principal: Principal) -> User:
    user = store.users.get(principal.tenant, principal.subject)
    if user is None:
        raise NotAuthenticated("the user of this token does not exist", code="unknown_user")
    return user


def rebind(principal: Principal, uid: str, parent_id: str, reason: str) -> User:
    """An operator moves `uid` under `parent_id`; the downline follows through the users stream."""
    require_role(principal, Role.OWNER, Role.OPS)
    if not reason.strip():
        raise InvalidInput("a reason is required", code="reason_required")
    store = get_store()
    tenant = principal.tenant
    for attempt in UPLINE_MOVES:
        user = store.users.get(tenant, uid)
        if user is None or store.users.node(tenant, parent_id) is None:
            raise Missing("user or new parent not found", code="unknown_user")
        parent, ancestry = _walk(store, tenant, parent_id)
        decision = referral.decide_rebind(user.node, parent, ancestry)
        if decision.status is BindStatus.REJECTED:
            code = decision.reason.value if decision.reason else "rejected"
            raise StateConflict(f"cannot move this user: {code}", code=code)
        data = {"from": list(user.upline), "to": list(decision.upline), "reason": reason.strip()}
        event = AuditEvent(entity=f"user:{uid}", action="user.rebound", actor=principal.actor, data=data)
        if store.users.move(tenant, uid, user.upline, decision.upline, when=utcnow(), event=event, rebind=True):
            if _validate(store, tenant, uid, parent_id, decision.upline, principal.actor) is None:
                raise StateConflict("cannot move this user: cycle", code="cycle")
            count("Rebinds")
            return store.users.get(tenant, uid) or user
        UPLINE_MOVES.pause(attempt)
    raise StateConflict("the user changed while moving, try again", code="busy")


def propagate(tenant: str, uid: str) -> int:
    """After `uid`'s upline changed, give each direct child the upline below it; returns changes.

    Reads current state, so replays and out-of-order deliveries converge on the same result.
    Each child's own change then propagates one level further, and stops where nothing moves.
    """
    store = get_store()
    children = store.users.children(tenant, uid)
    parent = store.users.node(tenant, uid) if children else None  # most new users have no team yet
    if parent is None:
        return 0
    return sum(_propagate_to(store, tenant, parent, child.id) for child in children)


def _propagate_to(store: Store, tenant: str, parent: Node, child_id: str) -> int:
    for attempt in UPLINE_MOVES:
        current = store.users.node(tenant, child_id)
        wanted = referral.propagated_upline(parent, current) if current else None
        if current is None or wanted is None:
            return 0
        data = {"from": list(current.upline), "to": list(wanted), "cause": parent.id}
        event = AuditEvent(entity=f"user:{child_id}", action="user.upline_moved", actor="system:propagate", data=data)
        if store.users.move(tenant, child_id, current.upline, wanted, when=utcnow(), event=event):
            return 1
        UPLINE_MOVES.pause(attempt)
    raise StateConflict(f"could not move {child_id}, will retry", code="busy")
