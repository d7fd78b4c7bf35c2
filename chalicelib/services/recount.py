"""Report counters rebuilt from what they count (报表重算): drift found, and repaired on request.

Counters are written in the same transaction as what they count, so in normal running they
cannot drift. This rebuild covers what that cannot: data written before a counter existed (a
backfill), a counter changed by hand, a bug found later. It replays the tenant's state and history
through the rules that count them live (`chalicelib.counters`), with no second copy of them:

- users: each user's audit records (created, bound, reverted, moved), oldest first, through
  `counters.user_version`: team sizes now and joins per month, the day's bindings and scans
  through a binding, new promoters;
- orders that reached payment: `counters.order_paid` at their payment (the buyer's first paid
  order is the earliest), and their refunds' audit records through `counters.order_refund`;
- commission lines: `counters.commission` for each line on the day it was written, in the month
  its order's commission was created, with the order's net paid amount now; each write's total
  shared among the order's sources; the ladder's month-to-date sales (`l1sales#`) as the lines
  recorded them;
- withdrawals: `counters.withdrawal` when requested and when paid out.

Not rebuilt: the day's `scans` (a scan that bound nobody is counted on its share's lifetime total
only, so the day it happened is kept nowhere but in the counter): they are left as they are. Lines
written before reports were counted are counted by the rebuild, as a backfill should.

`drift` compares without writing; `repair` adds each difference to its counter with an audit
record. The differences are read and then added, so a repair next to live traffic can only be as
exact as the moment it read: run it while the streams are quiet, and run `drift` again after.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib import counters
from chalicelib.counters import Deltas
from chalicelib.ledger import LedgerLine
from chalicelib.orders import Order
from chalicelib.store import recount as source
from chalicelib.store import stats

NOT_RECOUNTED = frozenset({"scans"})


@dataclass(frozen=True, slots=True)
class Drift:
    """One tenant's counters: how many items were compared, and what differs (expected - stored)."""

    tenant: str
    compared: int
    differences: Deltas

    def view(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "compared": self.compared,
            "differ": len(self.differences),
            "differences": [
                {"scope": scope, "period": period, "add": dict(sorted(values.items()))}
                for (scope, period), values in sorted(self.differences.items())
            ],
        }


def drift(tenant: str) -> Drift:
    """What the tenant's counters should be, against what they are (nothing written)."""
    zone = stats.timezone(tenant)
    expected = counters.merged(
        _users(source.people(tenant), zone),
        _orders_and_lines(source.paid_orders(tenant), source.channels(tenant), source.ledger_lines(tenant), zone),
        _withdrawals(source.payouts(tenant), zone),
    )
    stored = source.stored(tenant)
    differences: Deltas = {}
    for key in expected.keys() | stored.keys():
        want, have = expected.get(key, {}), stored.get(key, {})
        for name in (want.keys() | have.keys()) - NOT_RECOUNTED:
            counters.add(differences, *key, name, want.get(name, 0) - have.get(name, 0))
    return Drift(tenant, len(expected.keys() | stored.keys()), differences)


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
            _into(deltas, counters.user_version(version, zone))
            upline = after
    return deltas


def _orders_and_lines(
    orders: Iterable[tuple[Order, Any]], channels: dict[str, str | None], lines: Iterable[LedgerLine], zone: str
) -> Deltas:
    deltas: Deltas = {}
    paid: dict[str, Order] = {}
    sources: dict[str, counters.Sources] = {}
    for order, records in orders:
        paid[order.id] = order
        snapshot = order.snapshot
        code = snapshot.share_code
        sources[order.id] = counters.Sources.of(
            code,
            channels.get(code) if code else None,
            snapshot.upline,
            ((x.product_id, x.paid_fen) for x in order.lines),
        )
        for record in records:
            refund = order.refund(str(record.data.get("refund_id")))
            late = refund.late_payment if refund is not None else False
            _into(deltas, counters.order_refund(record.action, record.data, late, record.at, zone))
    first: dict[str, Order] = {}
    for order in paid.values():
        mine = first.get(order.buyer)
        if mine is None or (order.paid_at, order.id) < (mine.paid_at, mine.id):
            first[order.buyer] = order
    for order in paid.values():
        at = order.paid_at
        assert at is not None  # noqa: S101 (paid orders only)
        counted = counters.order_paid(
            order.amount_fen, at, zone, sources[order.id], first_order=first[order.buyer] is order
        )
        _into(deltas, counted)
    _into(deltas, _commission(lines, paid, sources, zone))
    return deltas


def _commission(
    lines: Iterable[LedgerLine], paid: dict[str, Order], sources: dict[str, counters.Sources], zone: str
) -> Deltas:
    deltas: Deltas = {}
    groups: dict[tuple[str, int, str], list[LedgerLine]] = defaultdict(list)
    writes: dict[tuple[str, str], list[LedgerLine]] = defaultdict(list)
    for line in lines:
        groups[(line.promoter, line.level, line.order_id)].append(line)
        writes[(line.order_id, line.event)].append(line)
    ladder: dict[str, list[Any]] = {}
    for (promoter, level, order_id), group in groups.items():
        order = paid.get(order_id)
        created = next((x for x in group if x.is_creation), None)
        if order is None or created is None:
            continue
        month = counters.month_of(created.created_at, zone)
        net = order.amount_fen - order.refunded_fen
        for line in group:
            day = counters.day_of(line.created_at, zone)
            counters.commission(
                deltas, promoter, level, amount=line.amount_fen, day=day, month=month, net_delta=0, orders_delta=0
            )
        day = counters.day_of(created.created_at, zone)
        counters.commission(
            deltas, promoter, level, amount=0, day=day, month=month, net_delta=net, orders_delta=int(net > 0)
        )
        recorded = created.trace.get("sales")
        if recorded:
            ladder[order_id] = list(recorded)
    for (order_id, _), written in writes.items():
        if order_id in sources:
            day = counters.day_of(written[0].created_at, zone)
            sources[order_id].add(deltas, day, "commission_fen", sum(x.amount_fen for x in written))
    for scope, period, net in ladder.values():
        counters.add(deltas, str(scope), str(period), "sales_fen", int(net))
        counters.add(deltas, str(scope), str(period), "orders", int(int(net) > 0))
    return deltas


def _withdrawals(payouts: Iterable[Any], zone: str) -> Deltas:
    deltas: Deltas = {}
    for payout in payouts:
        _into(deltas, counters.withdrawal("withdrawals_fen", payout.amount_fen, payout.requested_at, zone))
        if payout.paid_at is not None:
            _into(deltas, counters.withdrawal("payouts_fen", payout.amount_fen, payout.paid_at, zone))
    return deltas


def _into(deltas: Deltas, more: Deltas) -> None:
    """Add `more` to `deltas` in place (`counters.merged` copies: too slow for a whole tenant)."""
    for (scope, period), values in more.items():
        for name, delta in values.items():
            counters.add(deltas, scope, period, name, delta)
