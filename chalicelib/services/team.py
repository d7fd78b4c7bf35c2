"""A promoter's own view ("my distribution") and the operator's tree."""

from __future__ import annotations

from typing import Any

from chalicelib import counters
from chalicelib.api.views import member_view, user_view
from chalicelib.auth import require_role
from chalicelib.entities import Principal
from chalicelib.errors import Missing, NotAuthenticated
from chalicelib.referral import MAX_LEVELS
from chalicelib.store import get_store


def team_counts(tenant: str, uid: str) -> dict[str, int]:
    """Team size per level, from the promoter's counters (one read, whatever the team's size;
    the users stream keeps them equal to the users below at each level)."""
    # function-local: cold start (the stats store loads PynamoDB)
    from chalicelib.store import stats

    values = stats.get_many(tenant, [(counters.promoter_scope(uid), counters.ALL)])
    totals = values[(counters.promoter_scope(uid), counters.ALL)]
    return {str(level): totals.get(f"team_{level}", 0) for level in range(1, MAX_LEVELS + 1)}


def me(principal: Principal) -> dict[str, Any]:
    """The caller's profile: only the level-1 upline's display name is revealed."""
    store = get_store()
    user = store.users.get(principal.tenant, principal.subject)
    if user is None:
        raise NotAuthenticated("the user of this token does not exist", code="unknown_user")
    upline = upline_refs(principal.tenant, user.upline[:1])[0] if user.upline else None
    return {
        **user_view(user),
        "upline": upline,
        "team_counts": team_counts(principal.tenant, user.id),
    }


def upline_refs(tenant: str, upline: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    """An upline as `{"id", "name"}` refs, nearest first: the one shape of an upline everywhere."""
    names = get_store().users.names(tenant, list(upline)) if upline else {}
    return [{"id": uid, "name": names.get(uid, "")} for uid in upline]


def my_team(principal: Principal, level: int, cursor: str | None, limit: int) -> dict[str, Any]:
    page = get_store().users.team(principal.tenant, principal.subject, level, cursor, limit)
    return {"items": [member_view(m) for m in page.items], "next_cursor": page.next_cursor}


def tree(principal: Principal, uid: str, depth: int, limit: int, cursor: str | None) -> dict[str, Any]:
    """`uid` and its downline `depth` levels deep; each node lists one page of its children."""
    require_role(principal)
    store = get_store()
    user = store.users.get(principal.tenant, uid)
    if user is None:
        raise Missing("user not found", code="unknown_user")
    node = {
        **user_view(user),
        "upline": upline_refs(principal.tenant, user.upline),
        "team_counts": team_counts(principal.tenant, uid),
    }
    node.update(_children(principal.tenant, uid, depth, limit, cursor))
    return node


def _children(tenant: str, uid: str, depth: int, limit: int, cursor: str | None) -> dict[str, Any]:
    page = get_store().users.team(tenant, uid, 1, cursor, limit)
    children = []
    for member in page.items:
        child = member_view(member)
        if depth > 1:
            child.update(_children(tenant, member.id, depth - 1, limit, None))
        children.append(child)
    return {"children": children, "next_cursor": page.next_cursor}
