"""The operators' promoters (推广员): search, a list with team sizes and this month's sales, and one
promoter's account, commission lines and level-1 team.

Every figure comes from what the writes maintain, never from counting: team sizes and the month's
sales and commission from the promoter's counters (`chalicelib.counters`, two items per promoter,
one batch get per page), balances from the account item. A page costs a fixed number of reads
whatever the size of a team.

Search (`q`): an exact user id, else an exact openid (user ids derive from openids, no lookup),
else a display-name prefix (the users' `named` index; DynamoDB compares bytes, so the prefix is
case-sensitive). Without `q`: the tenant's promoters, newest first (the `joined` index).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import counters
from chalicelib.api import views
from chalicelib.api.views import commission_line_view
from chalicelib.auth import require_role
from chalicelib.clock import iso, utcnow
from chalicelib.entities import Page, Principal, User
from chalicelib.errors import InvalidInput, Missing
from chalicelib.referral import MAX_LEVELS
from chalicelib.services import logins, tenants
from chalicelib.store import get_store

MAX_QUERY = 64
LEVELS = tuple(str(level) for level in range(1, MAX_LEVELS + 1))


def mask_openid(openid: str) -> str:
    """An openid as the console shows it: enough to compare, not enough to use."""
    return f"{openid[:4]}****{openid[-4:]}" if len(openid) > 8 else "****"


def _month(tenant: str) -> str:
    return utcnow().astimezone(ZoneInfo(tenants.get(tenant).timezone)).strftime("%Y-%m")


def _rows(tenant: str, users: list[User]) -> list[dict[str, Any]]:
    """List rows for these users: counters, balances and upline names in a few batched reads."""
    # function-local: cold start (the store module loads PynamoDB)
    from chalicelib.store import stats

    if not users:
        return []
    store = get_store()
    month = _month(tenant)
    keys = [(counters.promoter_scope(u.id), period) for u in users for period in (counters.ALL, month)]
    found = stats.get_many(tenant, keys)
    names = store.users.names(tenant, [uid for u in users for uid in u.upline])
    accounts = store.ledger.accounts(tenant, [u.id for u in users])
    rows = []
    for user, account in ((u, accounts[u.id]) for u in users):
        total = found[(counters.promoter_scope(user.id), counters.ALL)]
        this_month = found[(counters.promoter_scope(user.id), month)]
        rows.append(
            {
                "id": user.id,
                "name": user.name,
                "openid": mask_openid(user.openid),
                "promoter": user.promoter,
                "joined_at": iso(user.created_at),
                "bound_at": iso(user.bound_at) if user.bound_at else None,
                "upline": [{"id": uid, "name": names.get(uid, "")} for uid in user.upline],
                "team_counts": {k: total.get(f"team_{k}", 0) for k in LEVELS},
                "month": month,
                "sales_fen": sum(this_month.get(f"sales_fen_{k}", 0) for k in LEVELS),
                "commission_fen": sum(this_month.get(f"commission_fen_{k}", 0) for k in LEVELS),
                "account": account,
            }
        )
    return rows


def _exact(tenant: str, q: str) -> User | None:
    """The user whose id, or else whose openid, is exactly `q`."""
    users = get_store().users
    user = users.get(tenant, q)
    if user is not None:
        return user
    user = users.get(tenant, logins.user_id_for(tenant, q))
    return user if user is not None and user.openid == q else None


def listing(principal: Principal, q: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of promoters: the one matching `q` exactly, or those whose name starts with it, or
    (no `q`) every promoter, newest first."""
    require_role(principal)
    tenant = principal.tenant
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise InvalidInput(f"q is at most {MAX_QUERY} characters", code="invalid_query")
    store = get_store()
    page: Page[User]
    if not q:
        page = store.users.joined(tenant, cursor, limit)
    elif cursor is None and (user := _exact(tenant, q)) is not None:
        page = Page([user], None)
    else:
        page = store.users.named(tenant, q, cursor, limit)
    return {"items": _rows(tenant, page.items), "next_cursor": page.next_cursor}


def detail(
    principal: Principal, uid: str, lines_cursor: str | None, team_cursor: str | None, limit: int
) -> dict[str, Any]:
    """One promoter: the list row (account included), one page of their commission lines (by
    order id, newest orders first) and one page of their level-1 team (newest binding first);
    deeper levels are the tree's (`GET /v1/admin/users/{uid}/tree`)."""
    require_role(principal)
    store = get_store()
    user = store.users.get(principal.tenant, uid)
    if user is None:
        raise Missing("user not found", code="unknown_user")
    lines = store.ledger.lines(principal.tenant, uid, None, lines_cursor, limit)
    members = store.users.team(principal.tenant, uid, 1, team_cursor, limit)
    names = store.users.names(principal.tenant, [line.buyer for line in lines.items]) if lines.items else {}
    names[user.id] = user.name
    return {
        **_rows(principal.tenant, [user])[0],
        "commissions": {
            "items": [commission_line_view(x, names) for x in lines.items],
            "next_cursor": lines.next_cursor,
        },
        "team": {"items": [views.member_view(m) for m in members.items], "next_cursor": members.next_cursor},
    }
