"""The pure parts of the counters' rebuild (`chalicelib.services.recount`); the whole rebuild runs
against DynamoDB Local in tests/integration/test_reports.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.services import recount
from chalicelib.store.recount import Payout

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
        "differences": [{"scope": "day", "period": "2026-11-02", "add": {"orders": 1, "paid_fen": -7}}],
    }
