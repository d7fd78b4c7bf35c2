"""The pure parts of the counters' rebuild (`chalicelib.services.recount`); the whole rebuild runs
against DynamoDB Local in tests/integration/test_reports.py."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.ledger import LedgerLine
from chalicelib.orders import Order, OrderStatus, PricedLine, Snapshot
from chalicelib.services import recount
from chalicelib.store.recount import Payout, Record

pytestmark = pytest.mark.unit

ZONE = "Asia/Shanghai"


def test_withdrawals_count_when_requested_and_when_paid_in_the_tenants_days() -> None:
    # Given one withdrawal paid the next local day (16:30 UTC is 00:30 in Shanghai) and one not paid
    requested = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    paid = datetime(2026, 11, 2, 16, 30, tzinfo=UTC)
    rows = [Payout(500, requested, paid), Payout(300, requested, None)]
    # Then both count as requested on the 2nd, the paid one as paid out on the 3rd
    assert recount._withdrawals(rows, ZONE) == {
        ("day", "2026-11-02"): {"withdrawals_fen": 800},
        ("day", "2026-11-03"): {"payouts_fen": 500},
    }


@pytest.mark.parametrize(
    ("action", "data", "before", "after"),
    [
        ("user.created", {"name": "x"}, (), ()),
        ("user.bound", {"upline": ["a", "b"], "share": "K1"}, (), ("a", "b")),
        ("user.bind_reverted", {"upline": ["a"], "reason": "cycle"}, ("a",), ()),
        ("user.rebound", {"from": ["a"], "to": ["c", "d", "e"], "reason": "r"}, ("a",), ("c", "d", "e")),
        ("user.upline_moved", {"from": ["a", "b"], "to": ["a"], "cause": "b"}, ("a", "b"), ("a",)),
        ("user.renamed", {"name": "y"}, ("a",), ("a",)),
    ],
)
def test_a_users_upline_follows_its_audit_records(action: str, data: dict, before: tuple, after: tuple) -> None:
    assert recount._upline_after(action, data, before) == after


def test_the_drift_view_lists_each_item_to_add() -> None:
    drift = recount.Drift("wx1", 3, {("day", "2026-11-02"): {"paid_fen": -7, "orders": 1}})
    assert drift.view() == {
        "tenant": "wx1",
        "compared": 3,
        "differ": 1,
        "skipped": [],
        "differences": [{"scope": "day", "period": "2026-11-02", "add": {"orders": 1, "paid_fen": -7}}],
    }


# --- orders and their commission lines ------------------------------------------------------

AT = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # 11:00 on the 2nd in Shanghai


def _order(order_id: str, buyer: str, paid_at: datetime, *, refunded_fen: int = 0) -> Order:
    line = PricedLine("p1", "tea", 1, 1_000, 1_000)
    return Order(
        tenant="wx1", id=order_id, buyer=buyer, lines=(line,), status=OrderStatus.PAID, snapshot=Snapshot(("u1",)),
        placed_at=paid_at, paid_at=paid_at, refunded_fen=refunded_fen,
    )  # fmt: skip


def _record(action: str, at: datetime, version: int, **data: object) -> Record:
    return Record(action, data, at, version)


def test_a_payment_counts_on_the_day_it_was_written_not_on_wechats_time() -> None:
    # Given WeChat's success time on the 1st, and the payment written (notified late) on the 2nd
    order = _order("o1", "b1", AT - timedelta(days=1))
    deltas, skipped = recount._orders_and_lines([(order, (_record("order.paid", AT, 2),))], {}, [], ZONE)
    # Then the day's order, amount and first order are the 2nd's
    assert deltas[("day", "2026-11-02")] == {"orders": 1, "paid_fen": 1_000, "first_orders": 1}
    assert ("day", "2026-11-01") not in deltas and skipped == ()


def test_the_first_order_is_the_first_payment_written() -> None:
    # o1 was paid earlier at WeChat, but its payment was written a day after o2's
    early = _order("o1", "b1", AT - timedelta(hours=5))
    late = _order("o2", "b1", AT - timedelta(hours=1))
    orders = [(early, (_record("order.paid", AT + timedelta(days=1), 2),)), (late, (_record("order.paid", AT, 2),))]
    deltas, _ = recount._orders_and_lines(orders, {}, [], ZONE)
    assert deltas[("day", "2026-11-02")] == {"orders": 1, "paid_fen": 1_000, "first_orders": 1}
    assert deltas[("day", "2026-11-03")] == {"orders": 1, "paid_fen": 1_000}


def test_a_merchants_refund_without_a_refund_entry_counts_from_its_audit_record() -> None:
    order = _order("o1", "b1", AT, refunded_fen=300)
    records = (_record("order.paid", AT, 2), _record("order.refunded", AT + timedelta(days=1), 3, amount_fen=300))
    deltas, _ = recount._orders_and_lines([(order, records)], {}, [], ZONE)
    assert deltas[("day", "2026-11-03")] == {"refunds_fen": 300}


def _line(level: int, amount: int, trace: Mapping[str, object], event: str = "paid") -> LedgerLine:
    return LedgerLine(
        tenant="wx1", promoter=f"u{level}", order_id="o1", level=level, event=event, amount_fen=amount,
        state="pending", buyer="b1", trace=trace, created_at=AT,
    )  # fmt: skip


def test_lines_written_before_reports_were_counted_stay_out_and_so_does_the_ladder() -> None:
    # Given an order whose level-1 line counted its report and ladder sales, and a level-2 line from before both
    order = _order("o1", "b1", AT)
    counted = {"report": {"month": "2026-11", "net_fen": 1_000}, "sales": ["l1sales#u1", "2026-11", 1_000]}
    lines = [_line(1, 100, counted), _line(2, 50, {})]
    deltas, skipped = recount._orders_and_lines([(order, (_record("order.paid", AT, 2),))], {}, lines, ZONE)
    # Then only the level-1 line counts, and the ladder counters are left as they are
    assert deltas[("p#u1", "2026-11")] == {"commission_fen_1": 100, "sales_fen_1": 1_000, "orders_1": 1}
    assert ("p#u2", "2026-11") not in deltas
    assert deltas[("day", "2026-11-02")]["commission_fen_1"] == 100
    assert "commission_fen_2" not in deltas[("day", "2026-11-02")]
    assert skipped == (recount.LADDER_SKIPPED,)
    assert not any(scope.startswith("l1sales#") for scope, _ in deltas)


def test_the_ladder_counts_each_orders_newest_record_once() -> None:
    order = _order("o1", "b1", AT, refunded_fen=400)
    report = {"month": "2026-11", "net_fen": 600}
    lines = [
        _line(1, 60, {"report": report, "sales": ["l1sales#u1", "2026-11", 600], "version": 4}),
        _line(2, 30, {"report": report, "sales": ["l1sales#u1", "2026-11", 1_000], "version": 2}),  # left stale
    ]
    deltas, skipped = recount._orders_and_lines([(order, (_record("order.paid", AT, 2),))], {}, lines, ZONE)
    assert skipped == ()
    assert deltas[("l1sales#u1", "2026-11")] == {"sales_fen": 600, "orders": 1}
