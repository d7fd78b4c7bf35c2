"""The plan simulator (方案模拟): the last N local days of a tenant's paid orders replayed under a
draft plan and under the active one, so an owner sees what a plan would cost before activating it.

Every order goes through `chalicelib.commission.compute`, the rule the commission engine runs
(there is no second copy of it), with what the engine would give it: the order's frozen
attribution snapshot (upline, whether the buyer was a promoter), the time it was paid (campaign
windows), and for the ladder the level-1 promoter's month-to-date sales as the replay accumulates
them. Each plan keeps its own month-to-date sales, because a plan's own policies (self-purchase,
compressing inactive uplines) decide who is level 1. When a plan has a ladder the replay reads
from the first of the month, so the window's first days see the sales before them.

Refunds: an order counts with what is still paid (`sales_fen`); its commission is scaled down as
the ledger scales it (`commission.remaining_after_refunds`), and only its net amount counts
towards a ladder tier. Who is an active promoter is read as it is today. A plan that creates
commission on receipt is replayed as if each order were received: the amount is the same, only
its moment differs.

A cap breach is an order whose commission the draft's cap trims. Owners, ops and finance may
simulate (they design and pay for commission; only owners save and activate a plan). Nothing is
written, so a simulation leaves no audit record.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from chalicelib import collector, commission, counters
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.commission import Plan
from chalicelib.entities import Principal, Role
from chalicelib.errors import InvalidInput, TooLarge
from chalicelib.money import BPS_DENOMINATOR, apply_bps
from chalicelib.referral import MAX_LEVELS
from chalicelib.services import plans, tenants
from chalicelib.store import get_store

if TYPE_CHECKING:  # the store's models load PynamoDB and botocore: not at `import app` (cold start)
    from chalicelib.store.sold import Sale

MAX_DAYS = 90
DEFAULT_DAYS = 30
MAX_ORDERS = 200_000  # beyond this a replay outlives an API request: simulate fewer days
TOP_CHANGES = 10
CHUNK = 500  # orders whose promoters are looked up together
QUARTER_HOUR = 900  # seconds: every UTC offset in use is a whole number of quarter hours
ROLES = (Role.OWNER, Role.OPS, Role.FINANCE)
LEVELS = tuple(str(level) for level in range(1, MAX_LEVELS + 1))


@dataclass
class Replay:
    """One plan's run over the orders: commission per level and per promoter, cap breaches."""

    plan: Plan | None
    month_sales: dict[tuple[str, str], int] = field(default_factory=dict)
    by_level: list[int] = field(default_factory=lambda: [0] * MAX_LEVELS)
    by_promoter: dict[str, int] = field(default_factory=dict)
    cap_breaches: int = 0
    months: dict[int, str] = field(default_factory=dict)  # UTC quarter hour -> month in the plan's zone

    def add(self, sale: Sale, active: Callable[[str], bool], *, count: bool) -> None:
        """Replay one order (oldest first); `count`: it is in the window, not only month-to-date."""
        plan = self.plan
        if plan is None:
            return
        month_sales = self._accumulate(plan, sale, active) if plan.ladder else {}
        if not count:
            return
        earnings = commission.compute(
            sale.lines, sale.attribution, plan, at=sale.paid_at, month_sales_fen=month_sales, is_active=active
        )
        by_level, by_promoter, refunded = self.by_level, self.by_promoter, sale.refunded_fen
        earned, capped = 0, False
        for earning in earnings:
            amount = earning.amount_fen
            earned += amount
            capped = capped or earning.trace.capped
            if refunded:
                amount = commission.remaining_after_refunds(amount, sale.amount_fen, refunded)
            by_level[earning.level - 1] += amount
            by_promoter[earning.promoter] = by_promoter.get(earning.promoter, 0) + amount
        if capped or _trimmed(sale, plan, earned, month_sales, active):
            self.cap_breaches += 1

    def _accumulate(self, plan: Plan, sale: Sale, active: Callable[[str], bool]) -> dict[str, int]:
        """The level-1 promoter's month-to-date sales with this order (as the engine's counter)."""
        level1 = commission.earners(sale.attribution, plan, active)[:1]
        if not level1:
            return {}
        promoter = level1[0][1]
        key = (promoter, self._month(sale.paid_at, plan.timezone))
        total = self.month_sales[key] = self.month_sales.get(key, 0) + sale.net_fen
        return {promoter: total}

    def _month(self, at: datetime, timezone: str) -> str:
        """`counters.month_of`, once per quarter hour of UTC: a local month starts at a local
        midnight, which is a whole quarter hour of UTC, so a quarter hour lies in one month."""
        quarter = int(at.timestamp()) // QUARTER_HOUR
        month = self.months.get(quarter)
        if month is None:
            month = self.months[quarter] = counters.month_of(at, timezone)
        return month

    def figures(self, sales_fen: int) -> dict[str, Any]:
        total = sum(self.by_level)
        return {
            "commission_fen": dict(zip(LEVELS, self.by_level, strict=True)),
            "total_fen": total,
            "cost_bps": total * BPS_DENOMINATOR // sales_fen if sales_fen > 0 else 0,
        }


def _trimmed(sale: Sale, plan: Plan, earned: int, month_sales: dict[str, int], active: Callable[[str], bool]) -> bool:
    """Whether the plan's cap cut this order's commission although no line's trace says so (the
    caller looked at the traces): a line the cap left at zero is not returned, so when the lines
    (`earned` in all) fill the whole budget the order is computed once more without the cap (rare:
    only fixed amounts can outgrow a valid plan's cap)."""
    if plan.cap_bps >= BPS_DENOMINATOR:
        return False
    paid = sum(line.paid_fen for line in sale.lines)
    budget = min(apply_bps(paid, plan.cap_bps), paid)
    if earned < budget:
        return False
    uncapped = commission.compute(
        sale.lines,
        sale.attribution,
        replace(plan, cap_bps=BPS_DENOMINATOR),
        at=sale.paid_at,
        month_sales_fen=month_sales,
        is_active=active,
    )
    return sum(e.amount_fen for e in uncapped) > budget


class Promoters:
    """Who is an active promoter today, read in batches as the replay meets new users: uplines,
    and buyers only where a plan pays self-purchase and the buyer was a promoter when ordering
    (nobody else asks about a buyer)."""

    def __init__(self, tenant: str, self_purchase: bool) -> None:
        self.tenant = tenant
        self.self_purchase = self_purchase
        self.known = _Known()
        self.is_active: Callable[[str], bool] = self.known.__getitem__  # the rules ask it per level

    def _users(self, sale: Sale) -> tuple[str, ...]:
        attribution = sale.attribution
        upline = attribution.upline
        return (attribution.buyer, *upline) if self.self_purchase and attribution.buyer_is_promoter else upline

    def learn(self, sales: Iterable[Sale]) -> None:
        new = {uid for s in sales for uid in self._users(s) if uid not in self.known}
        if new:
            active = get_store().users.promoters(self.tenant, sorted(new))
            self.known.update({uid: uid in active for uid in new})


class _Known(dict[str, bool]):
    """Users looked up so far: whether each is an active promoter (nobody looked up is not)."""

    def __missing__(self, uid: str) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Window:
    """The local days replayed, the instants they span, and where reading starts (month start
    when a plan has a ladder)."""

    first_day: str
    last_day: str
    start: datetime
    end: datetime
    read_from: datetime


def window(timezone: str, days: int, now: datetime, rules: Iterable[Plan | None]) -> Window:
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(today + timedelta(days=1), time(), zone)
    read_from = start
    for plan in rules:
        if plan is not None and plan.ladder:
            local = start.astimezone(ZoneInfo(plan.timezone))
            read_from = min(read_from, local.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    return Window(first.isoformat(), today.isoformat(), start, end, read_from)


def _days(body: dict[str, Any]) -> int:
    days = body.get("days", DEFAULT_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days is a whole number from 1 to {MAX_DAYS}", code="invalid_days")
    return days


def _draft(body: dict[str, Any]) -> Plan:
    draft = body.get("plan")
    if not isinstance(draft, dict):
        raise InvalidInput("plan is a plan body, as saved with POST /v1/admin/plans", code="invalid_plan")
    return plans.validated(draft)


def simulate(principal: Principal, body: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """Replay the caller's tenant's paid orders of the last `days` local days under the draft plan
    in `body` and under the active plan."""
    require_role(principal, *ROLES)
    days, draft_plan = _days(body), _draft(body)
    tenant = principal.tenant
    version = get_store().plans.active_version(tenant)
    active_plan = plans.plan(tenant, version) if version is not None else None
    span = window(tenants.get(tenant).timezone, days, now or utcnow(), (draft_plan, active_plan))
    draft, active = Replay(draft_plan), Replay(active_plan)
    with collector.paused():  # the replay allocates a lot, frees it all at once (see `collector`)
        orders, sales_fen = _replay(tenant, span, (draft, active))
    return {
        "days": days,
        "from": span.first_day,
        "to": span.last_day,
        "active_version": version,
        "orders": orders,
        "sales_fen": sales_fen,
        "draft": draft.figures(sales_fen),
        "active": active.figures(sales_fen),
        "promoters": _promoters(draft, active),
        "top_changes": _top_changes(tenant, draft, active),
        "cap_breaches": draft.cap_breaches,
    }


def _replay(tenant: str, span: Window, replays: tuple[Replay, ...]) -> tuple[int, int]:
    """Feed every order paid since `span.read_from` to each replay, oldest first; the number of
    orders in the window and what is still paid of them."""
    # function-local: cold start (the store module loads PynamoDB)
    from chalicelib.store import sold

    orders = sales_fen = 0
    promoters = Promoters(tenant, any(r.plan is not None and r.plan.self_purchase for r in replays))
    active = promoters.is_active
    get_store()  # the store's models are configured before the index is read
    sales = sold.sales(tenant, span.read_from, span.end)
    while chunk := list(itertools.islice(sales, CHUNK)):
        promoters.learn(chunk)
        for sale in chunk:
            counted = sale.paid_at >= span.start
            if counted:
                orders, sales_fen = orders + 1, sales_fen + sale.net_fen
                if orders > MAX_ORDERS:
                    raise TooLarge(
                        f"more than {MAX_ORDERS} orders in these days: simulate fewer days", code="too_many_orders"
                    )
            for replay in replays:
                replay.add(sale, active, count=counted)
    return orders, sales_fen


def _promoters(draft: Replay, active: Replay) -> dict[str, int]:
    """How many promoters earning under either plan would earn more, less or the same."""
    gain = lose = same = 0
    for uid in draft.by_promoter.keys() | active.by_promoter.keys():
        change = draft.by_promoter.get(uid, 0) - active.by_promoter.get(uid, 0)
        gain, lose, same = gain + (change > 0), lose + (change < 0), same + (change == 0)
    return {"gain": gain, "lose": lose, "same": same}


def _top_changes(tenant: str, draft: Replay, active: Replay) -> list[dict[str, Any]]:
    """The promoters whose commission changes most (either way), largest change first."""
    changes = [
        (uid, active.by_promoter.get(uid, 0), draft.by_promoter.get(uid, 0))
        for uid in draft.by_promoter.keys() | active.by_promoter.keys()
    ]
    changes = [c for c in changes if c[1] != c[2]]
    changes.sort(key=lambda c: (-abs(c[2] - c[1]), c[0]))
    top = changes[:TOP_CHANGES]
    names = get_store().users.names(tenant, [uid for uid, *_ in top]) if top else {}
    return [
        {"promoter": uid, "name": names.get(uid, ""), "active_fen": before, "draft_fen": after}
        for uid, before, after in top
    ]
