"""Binding against DynamoDB Local: concurrency, cycles, audit, operator moves."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.entities import Role
from chalicelib.referral import BindStatus
from chalicelib.services import logins, referrals, shares
from chalicelib.store import get_store
from chalicelib.store.models import AuditModel
from tests.stack import Stack, unique


def make_user(stack: Stack, name: str) -> str:
    return logins.login(f"dev-{unique(name)}", stack.tenant).user.id


def share_of(stack: Stack, uid: str) -> str:
    return shares.create(stack.principal(uid), None, None).code


def bind(stack: Stack, child: str, parent: str) -> referrals.ScanResult:
    return referrals.scan(stack.principal(child), share_of(stack, parent))


def audit_actions(stack: Stack, uid: str) -> list[str]:
    stack.drain()
    return [r.action for r in AuditModel.query(f"{stack.tenant}#user:{uid}", consistent_read=True)]


def test_fifty_concurrent_scans_of_fifty_codes_bind_exactly_once(stack: Stack) -> None:
    # Given one new user and fifty promoters with a code each
    user = make_user(stack, "target")
    codes = [share_of(stack, make_user(stack, "promoter")) for _ in range(50)]

    # When the user opens all fifty codes at once
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda code: referrals.scan(stack.principal(user), code), codes))

    # Then exactly one scan bound them, every other one reports already_bound
    statuses = [r.status for r in results]
    assert statuses.count(BindStatus.BOUND) == 1
    assert statuses.count(BindStatus.ALREADY_BOUND) == 49
    bound = get_store().users.get(stack.tenant, user)
    assert bound is not None and len(bound.upline) == 1
    assert audit_actions(stack, user).count("user.bound") == 1


def test_cycle_through_three_users_is_rejected_and_nothing_changes(stack: Stack) -> None:
    a, b, c = (make_user(stack, n) for n in ("a", "b", "c"))
    assert bind(stack, b, a).status is BindStatus.BOUND
    assert bind(stack, c, b).status is BindStatus.BOUND

    result = bind(stack, a, c)

    assert result.status is BindStatus.REJECTED
    assert result.reason == "cycle"
    user_a = get_store().users.get(stack.tenant, a)
    assert user_a is not None and user_a.upline == ()
    assert "user.bound" not in audit_actions(stack, a)


def test_self_binding_is_rejected(stack: Stack) -> None:
    a = make_user(stack, "self")
    assert bind(stack, a, a).reason == "self_binding"


def test_upline_is_copied_and_a_fourth_generation_never_reaches_the_root(stack: Stack) -> None:
    chain = [make_user(stack, f"g{i}") for i in range(5)]
    for parent, child in itertools.pairwise(chain):
        assert bind(stack, child, parent).status is BindStatus.BOUND
    users = get_store().users
    fifth = users.get(stack.tenant, chain[4])
    assert fifth is not None
    assert fifth.upline == (chain[3], chain[2], chain[1])
    assert chain[0] not in fifth.upline
    level3 = users.team(stack.tenant, chain[0], 3, None, 50).items
    assert [m.id for m in level3] == [chain[3]]
    assert users.team_count(stack.tenant, chain[0], 1) == 1


def test_scans_are_counted_on_the_share(stack: Stack) -> None:
    sharer, u1, u2 = (make_user(stack, n) for n in ("sharer", "u1", "u2"))
    code = share_of(stack, sharer)
    referrals.scan(stack.principal(u1), code)
    referrals.scan(stack.principal(u1), code)
    referrals.scan(stack.principal(u2), code)
    stack.drain()
    share = get_store().shares.get(stack.tenant, code)
    assert share is not None
    assert (share.scans, share.binds) == (3, 2)


def test_rebind_moves_the_user_and_the_stream_moves_the_downline(stack: Stack) -> None:
    # old <- a <- b <- c ; new root "n"
    old, a, b, c, n = (make_user(stack, x) for x in ("old", "a", "b", "c", "n"))
    for parent, child in ((old, a), (a, b), (b, c)):
        bind(stack, child, parent)
    admin = stack.principal("owner", Role.OWNER)

    moved = referrals.rebind(admin, a, n, "customer asked to change team")
    assert moved.upline == (n,)

    # the users stream moves the downline; delivering the work again changes nothing
    stack.drain()
    for uid in (a, b, c):
        assert referrals.propagate(stack.tenant, uid) == 0
    users = get_store().users
    assert users.get(stack.tenant, b).upline == (a, n)  # type: ignore[union-attr]
    assert users.get(stack.tenant, c).upline == (b, a, n)  # type: ignore[union-attr]
    assert audit_actions(stack, c).count("user.upline_moved") == 1
    record = next(r for r in AuditModel.query(f"{stack.tenant}#user:{a}") if r.action == "user.rebound")
    assert json.loads(record.data)["reason"] == "customer asked to change team"
    assert record.actor == "admin:owner"


def test_rebind_refuses_cycles_self_and_needs_a_role(stack: Stack) -> None:
    a, b = make_user(stack, "a"), make_user(stack, "b")
    bind(stack, b, a)
    owner = stack.principal("owner", Role.OWNER)
    from chalicelib.errors import NotAllowed, StateConflict

    with pytest.raises(StateConflict) as cycle:
        referrals.rebind(owner, a, b, "x")
    assert cycle.value.code == "cycle"
    with pytest.raises(StateConflict) as self_bind:
        referrals.rebind(owner, a, a, "x")
    assert self_bind.value.code == "self_binding"
    with pytest.raises(NotAllowed):
        referrals.rebind(stack.principal("finance", Role.FINANCE), b, b, "x")


def test_audit_chain_of_a_user_verifies(stack: Stack) -> None:
    from chalicelib.store import audit

    a, b, n = make_user(stack, "a"), make_user(stack, "b"), make_user(stack, "n")
    bind(stack, b, a)
    referrals.rebind(stack.principal("owner", Role.OWNER), b, n, "moved")
    stack.drain()
    records = list(AuditModel.query(f"{stack.tenant}#user:{b}", consistent_read=True))
    assert [r.action for r in records] == ["user.created", "user.bound", "user.rebound"]
    assert audit.verify_chain(records)
    tampered = records[1]
    tampered.data = json.dumps({"upline": ["someone-else"]})
    assert not audit.verify_chain(records)


def test_mutual_scans_at_the_same_moment_never_close_a_cycle(stack: Stack) -> None:
    import threading

    users = get_store().users
    for _ in range(12):
        u, v = make_user(stack, "u"), make_user(stack, "v")
        cu, cv = share_of(stack, u), share_of(stack, v)
        barrier = threading.Barrier(2)

        def scan_after_barrier(args: tuple[str, str], barrier: threading.Barrier = barrier) -> referrals.ScanResult:
            barrier.wait()
            return referrals.scan(stack.principal(args[0]), args[1])

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(scan_after_barrier, [(u, cv), (v, cu)]))

        # the users stream validates both new edges against fresh state
        stack.drain()
        bound_u, bound_v = users.get(stack.tenant, u), users.get(stack.tenant, v)
        assert bound_u is not None
        assert bound_v is not None
        assert not (bound_u.upline and bound_v.upline), "u and v bound to each other: a cycle"
        assert sum(r.status is not BindStatus.ALREADY_BOUND for r in results) == 2


def test_a_cycle_written_by_a_race_is_reverted_by_the_stream(stack: Stack) -> None:
    # Given two roots written under each other, as two racing scans could leave them
    from chalicelib.clock import utcnow
    from chalicelib.entities import AuditEvent

    users = get_store().users
    u, v = make_user(stack, "u"), make_user(stack, "v")
    for child, parent in ((u, v), (v, u)):
        event = AuditEvent(
            entity=f"user:{child}", action="user.bound", actor=f"user:{child}", data={"upline": [parent]}
        )
        assert users.bind(stack.tenant, child, (parent,), via="race", when=utcnow(), event=event)

    # When the users stream validates the new edges
    stack.drain()

    # Then at least one edge is reverted, audited, and no cycle remains
    bound_u, bound_v = users.get(stack.tenant, u), users.get(stack.tenant, v)
    assert bound_u is not None
    assert bound_v is not None
    assert not (bound_u.upline and bound_v.upline)
    assert "user.bind_reverted" in audit_actions(stack, u) + audit_actions(stack, v)


def test_an_upline_copied_from_a_stale_cache_is_corrected(stack: Stack) -> None:
    s, p, x1, x2 = (make_user(stack, n) for n in ("s", "p", "x1", "x2"))
    code = share_of(stack, s)
    assert referrals.scan(stack.principal(x1), code).upline == (s,)  # caches s as a root
    assert bind(stack, s, p).status is BindStatus.BOUND  # s moves under p meanwhile
    assert referrals.scan(stack.principal(x2), code).upline == (s,)  # decided on the stale cache

    stack.drain()

    users = get_store().users
    assert users.get(stack.tenant, x1).upline == (s, p)  # type: ignore[union-attr]
    assert users.get(stack.tenant, x2).upline == (s, p)  # type: ignore[union-attr]
