"""The operators' orders (订单): a filtered list, and one order with its commission lines.

The list reads the orders' `listed` index (every order of the tenant by time of placing, sharded
so that a busy tenant's orders never share one index partition), newest first, filtered by status
and by a level-1..3 promoter of the attribution snapshot; dates are the tenant's local days. An
order's commission lines are read where the commission engine reads them: per earner (the buyer
and the snapshot's upline), strongly consistent, each with its rule trace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import local_days
from chalicelib.api import views
from chalicelib.auth import require_role
from chalicelib.entities import Principal
from chalicelib.errors import InvalidInput, Missing
from chalicelib.orders import TRANSITIONS, OrderStatus
from chalicelib.services import tenants
from chalicelib.store import get_store

STATES = tuple(s.value for s in OrderStatus)
MAX_ID = 64
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def span(tenant: str, first: str | None, last: str | None) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local days `first`..`last` (open ends when left out)."""
    start, end = local_days.chosen(first, last).instants(ZoneInfo(tenants.get(tenant).timezone))
    return (start.astimezone(UTC) if start else EARLIEST), (end.astimezone(UTC) if end else LATEST)


def listing(
    principal: Principal,
    state: str | None,
    first: str | None,
    last: str | None,
    promoter: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of the tenant's orders, newest first. A page may hold fewer than `limit` orders
    while `next_cursor` is set (the filters are applied as the index is read)."""
    require_role(principal)
    if state and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    if promoter and len(promoter) > MAX_ID:
        raise InvalidInput(f"promoter is at most {MAX_ID} characters", code="invalid_promoter")
    start, end = span(principal.tenant, first, last)
    store = get_store()
    page = store.orders.listed(
        principal.tenant,
        start=start,
        end=end,
        status=state or None,
        promoter=promoter or None,
        cursor=cursor,
        limit=limit,
    )
    wanted = [uid for row in page.items for uid in (row["buyer"], *row["upline"])]
    names = store.users.names(principal.tenant, wanted) if wanted else {}
    items = [
        {
            **row,
            "buyer": {"id": row["buyer"], "name": names.get(row["buyer"], "")},
            "upline": [{"id": uid, "name": names.get(uid, "")} for uid in row["upline"]],
        }
        for row in page.items
    ]
    return {"items": items, "next_cursor": page.next_cursor}


def detail(principal: Principal, order_id: str) -> dict[str, Any]:
    """The order (buyer, lines, amounts, refunds, attribution snapshot) and its commission lines
    with their rule traces, level 1 first."""
    require_role(principal)
    store = get_store()
    order = store.orders.get(principal.tenant, order_id)
    if order is None:
        raise Missing("order not found", code="unknown_order")
    lines = store.ledger.lines_of_order(order.tenant, order.id, [order.buyer, *order.snapshot.upline])
    lines.sort(key=lambda x: (x.level, x.created_at, x.event))
    names = store.users.names(order.tenant, [order.buyer, *order.snapshot.upline, *(x.promoter for x in lines)])
    refundable = order.refundable_fen if order.status in TRANSITIONS["refund"] else 0
    return views.admin_order_view(order, lines, names, refundable)
