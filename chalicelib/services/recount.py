"""Report counters rebuilt from what they count (报表重算): drift found, and repaired on request.

Counters are written in the same transaction as what they count, so in normal running they
cannot drift. This rebuild covers what that cannot: data written before a counter existed (a
backfill: withdrawals, bindings, payments), a counter changed or deleted by hand, a bug found
later. It replays the tenant's state and history through the rules that count them live
(`chalicelib.counters`), with no second copy of them:

- users: each user's audit records (created, bound, reverted, moved) in the order of its
  versions, through `counters.user_version`: team sizes now and joins per month, the day's
  bindings and scans through a binding, new promoters;
- orders that reached payment: `counters.order_paid` when their payment was written (its audit
  record: WeChat's or a merchant's payment time may be days earlier; the buyer's first paid
  order is the first written), and every refund's audit record (merchants' refunds leave no
  refund entry on the order) through `counters.order_refund`;
- commission lines, as `chalicelib.ledger` counts them: `counters.commission` for each line on
  the day it was written, in the month recorded when its order's commission was created, with
  the order's net paid amount now; each write's total shared among the order's sources; the
  ladder's month-to-date sales (`l1sales#`) as each order's newest line records them;
- withdrawals: `counters.withdrawal` when requested and when paid out.

Left as they are, and said so: the day's `scans` (a scan that bound nobody is counted on its
share's lifetime total only, so its day is kept nowhere but in the counter); the ladder counters
when some line predates the sales it records (they feed commission tiers: a guess may not move
them). Lines written before reports were counted stay out of them, as the ledger keeps them out
(counting them here would drift again at their next refund, which the ledger does not count).

`drift` compares without writing; `repair` adds each difference to its counter with an audit
record. The differences are read and then added, so a repair next to live traffic can only be as
exact as the moment it read: run it while the streams are quiet, and run `drift` again after.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib import counters
from chalicelib.counters import Deltas
from chalicelib.ledger import LedgerLine
from chalicelib.orders import Order
from chalicelib.store import recount as source
from chalicelib.store import stats

NOT_RECOUNTED = frozenset({"scans"})
LADDER = "l1sales#"
LADDER_SKIPPED = (
    "ladder counters (l1sales#) not rebuilt: some commission lines predate the sales they record;"
    " they feed commission tiers, so they are left as they are"
)


@dataclass(frozen=True, slots=True)
class Drift:
    """One tenant's counters: how many items were compared, and what differs (expected - stored)."""

    tenant: str
    compared: int
    differences: Deltas
    skipped: tuple[str, ...] = ()  # what could not be rebuilt, and was left as it is

    def view(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "compared": self.compared,
            "differ": len(self.differences),
            "skipped": list(self.skipped),
            "differences": [
                {"scope": scope, "period": period, "add": dict(sorted(values.items()))}
                for (scope, period), values in sorted(self.differences.items())
            ],
        }


def drift(tenant: str) -> Drift:
    """What the tenant's counters should be, against what they are (nothing written)."""
    zone = stats.timezone(tenant)
    orders, skipped = _orders_and_lines(
        source.paid_orders(tenant), source.channels(tenant), source.ledger_lines(tenant), zone
    )
    expected = counters.merged(_users(source.people(tenant), zone), orders, _withdrawals(source.payouts(tenant), zone))
    stored = source.stored(tenant)
    keys = expected.keys() | stored.keys()
    if LADDER_SKIPPED in skipped:
        keys = {key for key in keys if not key[0].startswith(LADDER)}
    differences: Deltas = {}
    for key in keys:
        want, have = expected.get(key, {}), stored.get(key, {})
        for name in (want.keys() | have.keys()) - NOT_RECOUNTED:
            counters.add(differences, *key, name, want.get(name, 0) - have.get(name, 0))
    return Drift(tenant, len(keys), differences, skipped)


def repair(tenant: str, actor: str) -> Drift:
    """Add each difference to its counter (audited as `stats.recounted` by `actor`); the drift
    that was repaired."""
    found = drift(tenant)
    if found.differences:
        source.correct(tenant, found.differences, actor)
    return found


# --- the history, through the live rules ----------------------------------------------------


def _upline_after(action: str, data: Any, before: tuple[str, ...]) -> tuple[str, ...]:
    """A user's upline after one of its versions (the audit record's data says where it went)."""
    if action == "user.bound":
        return tuple(str(x) for x in data.get("upline") or ())
    if action == "user.bind_reverted":
        return ()
    moved = data.get("to")
    return tuple(str(x) for x in moved) if isinstance(moved, list) else before


def _users(people: Iterable[Any], zone: str) -> Deltas:
    deltas: Deltas = {}
    for person in people:
        upline: tuple[str, ...] = ()
        for index, record in enumerate(person.history):
            after = _upline_after(record.action, record.data, upline)
            version = counters.UserVersion(
                action=record.action,
                data=record.data,
                at=record.at,
                upline=after,
                previous_upline=upline,
                promoter=person.promoter,
                was_promoter=index > 0 and person.promoter,
            )
            counters.add_all(deltas, counters.user_version(version, zone))
            upline = after
    return deltas


def _orders_and_lines(
    orders: Iterable[tuple[Order, Any]], channels: dict[str, str | None], lines: Iterable[LedgerLine], zone: str
) -> tuple[Deltas, tuple[str, ...]]:
    """The orders' counters (payments, refunds, sources) and their commission lines'; what could
    not be rebuilt."""
    deltas: Deltas = {}
    paid: dict[str, Order] = {}
    paid_at: dict[str, datetime] = {}  # when each payment was written (what the counters follow)
    sources: dict[str, counters.Sources] = {}
    for order, records in orders:
        paid[order.id] = order
        snapshot = order.snapshot
        code = snapshot.share_code
        products = ((line.product_id, line.paid_fen) for line in order.lines)
        sources[order.id] = counters.Sources.of(code, channels.get(code) if code else None, snapshot.upline, products)
        for record in records:
            if record.action == "order.paid" and order.id not in paid_at:
                paid_at[order.id] = record.at
            refund = order.refund(str(record.data.get("refund_id")))
            late = refund.late_payment if refund is not None else False
            counters.add_all(deltas, counters.order_refund(record.action, record.data, late, record.at, zone))
    first: dict[str, str] = {}  # buyer -> the order whose payment was written first
    for order_id, _ in sorted(paid_at.items(), key=lambda item: (item[1], item[0])):
        first.setdefault(paid[order_id].buyer, order_id)
    for order_id, at in paid_at.items():
        order = paid[order_id]
        is_first = first[order.buyer] == order_id
        counters.add_all(
            deltas, counters.order_paid(order.amount_fen, at, zone, sources[order_id], first_order=is_first)
        )
    commission, skipped = _commission(lines, paid, sources, zone)
    counters.add_all(deltas, commission)
    return deltas, skipped


def _commission(
    lines: Iterable[LedgerLine], paid: dict[str, Order], sources: dict[str, counters.Sources], zone: str
) -> tuple[Deltas, tuple[str, ...]]:
    """What the commission lines count, as the ledger counts them (`chalicelib.ledger`): only the
    lines whose order's commission was counted when it was created (its creation line records
    `report`), each on the day it was written, in the month recorded at creation, with the order's
    net paid amount now; each write's total shared among the order's sources. The ladder's
    month-to-date sales as the lines record them, unless some line predates that record."""
    deltas: Deltas = {}
    groups: dict[tuple[str, int, str], list[LedgerLine]] = defaultdict(list)
    for line in lines:
        groups[(line.promoter, line.level, line.order_id)].append(line)
    created = {key: first for key, group in groups.items() if key[2] in paid and (first := _creation(group))}
    writes: dict[tuple[str, str], list[LedgerLine]] = defaultdict(list)
    for (promoter, level, order_id), creation in created.items():
        report = creation.trace.get("report")
        if not isinstance(report, Mapping):
            continue  # written before reports were counted: the ledger keeps it out of them
        group = groups[(promoter, level, order_id)]
        _count_group(deltas, group, creation, str(report["month"]), paid[order_id], zone)
        for line in group:
            writes[(order_id, line.event)].append(line)
    for (order_id, _), written in writes.items():
        day = counters.day_of(written[0].created_at, zone)
        sources[order_id].add(deltas, day, "commission_fen", sum(x.amount_fen for x in written))
    ladder = _ladder(created.values())
    if ladder is None:
        return deltas, (LADDER_SKIPPED,)
    counters.add_all(deltas, ladder)
    return deltas, ()


def _creation(group: list[LedgerLine]) -> LedgerLine | None:
    return next((line for line in group if line.is_creation), None)


def _count_group(
    deltas: Deltas, group: list[LedgerLine], creation: LedgerLine, month: str, order: Order, zone: str
) -> None:
    """One promoter's level of one order: each line on its day, the order's net paid amount now."""
    promoter, level = creation.promoter, creation.level
    for line in group:
        day = counters.day_of(line.created_at, zone)
        counters.commission(
            deltas, promoter, level, amount=line.amount_fen, day=day, month=month, net_delta=0, orders_delta=0
        )
    net, day = order.amount_fen - order.refunded_fen, counters.day_of(creation.created_at, zone)
    counters.commission(
        deltas, promoter, level, amount=0, day=day, month=month, net_delta=net, orders_delta=int(net > 0)
    )


def _ladder(creations: Iterable[LedgerLine]) -> Deltas | None:
    """Each order's level-1 sales in its ladder counter, as its newest creation line records them
    (`sales`: scope, month, net paid); None when a line predates that record."""
    newest: dict[str, LedgerLine] = {}
    for creation in creations:
        if "sales" not in creation.trace:
            return None
        known = newest.get(creation.order_id)
        if known is None or creation.version > known.version:
            newest[creation.order_id] = creation
    deltas: Deltas = {}
    for creation in newest.values():
        recorded = creation.trace["sales"]
        if recorded:
            scope, period, net = recorded
            counters.add(deltas, str(scope), str(period), "sales_fen", int(net))
            counters.add(deltas, str(scope), str(period), "orders", int(int(net) > 0))
    return deltas


def _withdrawals(payouts: Iterable[Any], zone: str) -> Deltas:
    deltas: Deltas = {}
    for payout in payouts:
        counters.add_all(deltas, counters.withdrawal("withdrawals_fen", payout.amount_fen, payout.requested_at, zone))
        if payout.paid_at is not None:
            counters.add_all(deltas, counters.withdrawal("payouts_fen", payout.amount_fen, payout.paid_at, zone))
    return deltas
