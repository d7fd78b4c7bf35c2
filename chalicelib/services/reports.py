"""Reports read from the counters the writes maintain (`chalicelib.counters`).

Every report is a fixed number of reads on the caller's own keys: a promoter's month is two
items (`p#<uid>` for the month and for `all`), the daily report and the funnel one query over
the tenant's `day` items, the sources report one query over a kind's `src#<by>` items. None of
them grows with the size of a team or the number of orders. Dates are days of the tenant's
timezone; a range holds at most 366 days.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import counters, local_days
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import Principal
from chalicelib.errors import InvalidInput
from chalicelib.referral import MAX_LEVELS
from chalicelib.services import tenants
from chalicelib.store import get_store

MAX_DAYS = 366
MAX_SOURCES = 100
LEVELS = tuple(str(level) for level in range(1, MAX_LEVELS + 1))
DAILY = (
    "orders",
    "paid_fen",
    "refunds_fen",
    "new_bindings",
    "new_promoters",
    "scans",
    "withdrawals_fen",
    "payouts_fen",
)


def _today(tenant: str) -> date:
    return utcnow().astimezone(ZoneInfo(tenants.get(tenant).timezone)).date()


def _month(value: str | None, tenant: str) -> str:
    if value is None or value == "":
        return _today(tenant).strftime("%Y-%m")
    if re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value) is None:
        raise InvalidInput("month is a month like 2026-11", code="invalid_month")
    return value


def _range(tenant: str, first: str | None, last: str | None) -> tuple[str, str]:
    """The local days `first..last` (default: the last 7 days up to today), at most 366 days."""
    chosen = local_days.chosen(first, last, today=_today(tenant), max_days=MAX_DAYS)
    return str(chosen.first), str(chosen.last)


# --- a promoter's month ---------------------------------------------------------------------


def my_stats(principal: Principal, month: str | None) -> dict[str, Any]:
    """The caller's team and performance per level: the team now and who joined in `month`;
    orders, sales and commission of the orders whose commission was created in `month`."""
    # function-local: cold start (the stats store loads PynamoDB)
    from chalicelib.store import stats

    tenant, uid = principal.tenant, principal.subject
    period = _month(month, tenant)
    scope = counters.promoter_scope(uid)
    found = stats.get_many(tenant, [(scope, period), (scope, counters.ALL)])
    in_month, total = found[(scope, period)], found[(scope, counters.ALL)]
    return {
        "month": period,
        "team": {k: {"total": total.get(f"team_{k}", 0), "new": in_month.get(f"team_{k}", 0)} for k in LEVELS},
        "orders": {k: in_month.get(f"orders_{k}", 0) for k in LEVELS},
        "sales_fen": {k: in_month.get(f"sales_fen_{k}", 0) for k in LEVELS},
        "commission_fen": {k: in_month.get(f"commission_fen_{k}", 0) for k in LEVELS},
    }


# --- operators ------------------------------------------------------------------------------


def _day_view(day: str, values: dict[str, int]) -> dict[str, Any]:
    return {
        "date": day,
        **{name: values.get(name, 0) for name in DAILY},
        "commission_fen": {k: values.get(f"commission_fen_{k}", 0) for k in LEVELS},
    }


def daily(principal: Principal, first: str | None, last: str | None) -> dict[str, Any]:
    """Each local day of the range (days without activity included), and the range's totals."""
    # function-local: cold start (the stats store loads PynamoDB)
    from chalicelib.store import stats

    require_role(principal)
    start, end = _range(principal.tenant, first, last)
    found = dict(stats.period_range(principal.tenant, counters.DAY, start, end))
    days = []
    day = date.fromisoformat(start)
    while day.isoformat() <= end:
        days.append(_day_view(day.isoformat(), found.get(day.isoformat(), {})))
        day += timedelta(days=1)
    totals = _day_view("", {})
    del totals["date"]
    for row in days:
        for name in DAILY:
            totals[name] += row[name]
        for k in LEVELS:
            totals["commission_fen"][k] += row["commission_fen"][k]
    return {"days": days, "totals": totals}


def sources(principal: Principal, first: str | None, last: str | None, by: str | None, limit: int) -> dict[str, Any]:
    """Orders, paid amount and commission per source over the range, largest paid amount first."""
    # function-local: cold start (the stats store loads PynamoDB)
    from chalicelib.store import stats

    require_role(principal)
    kind = by or "channel"
    if kind not in counters.SOURCE_KINDS:
        raise InvalidInput(f"by is one of {', '.join(counters.SOURCE_KINDS)}", code="invalid_by")
    start, end = _range(principal.tenant, first, last)
    totals: dict[str, dict[str, int]] = {}
    for period, values in stats.period_range(principal.tenant, counters.source_scope(kind), start, end + "#\uffff"):
        key = period.split("#", 1)[1]
        row = totals.setdefault(key, {"orders": 0, "paid_fen": 0, "commission_fen": 0})
        for name in row:
            row[name] += values.get(name, 0)
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1]["paid_fen"], -kv[1]["orders"], kv[0]))[:limit]
    names = _names(principal.tenant, kind, [key for key, _ in ranked])
    return {"items": [{"key": key, "name": names.get(key, key), **row} for key, row in ranked]}


def _names(tenant: str, kind: str, keys: list[str]) -> dict[str, str]:
    if not keys or kind == "channel":
        return {}
    store = get_store()
    if kind == "promoter":
        return store.users.names(tenant, keys)
    return {pid: product.name for pid, product in store.products.get_many(tenant, keys).items()}


def funnel(principal: Principal, first: str | None, last: str | None) -> dict[str, int]:
    """Scans, bindings and buyers' first paid orders over the range."""
    # function-local: cold start (the stats store loads PynamoDB)
    from chalicelib.store import stats

    require_role(principal)
    start, end = _range(principal.tenant, first, last)
    out = {"scans": 0, "bindings": 0, "first_orders": 0}
    for _, values in stats.period_range(principal.tenant, counters.DAY, start, end):
        out["scans"] += values.get("scans", 0)
        out["bindings"] += values.get("new_bindings", 0)
        out["first_orders"] += values.get("first_orders", 0)
    return out
