"""Settlement at week and month boundaries in Asia/Shanghai, receipts made at chosen times (the
order service's clock patched), and a run executed twice settles nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.entities import Principal, Role
from chalicelib.services import orders, settlements
from chalicelib.store import get_store
from tests.integration.test_orders import PLAN_10_5_2, activate, chain, pay, product
from tests.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def owner(stack: Stack) -> Principal:
    return stack.principal("owner", Role.OWNER)


def _received_at(
    stack: Stack, owner: Principal, mode: str, received_utc: datetime, monkeypatch: pytest.MonkeyPatch
) -> Principal:
    """A sharer whose friend's 100-yuan order was received at `received_utc` under `mode`."""
    activate(owner, {**PLAN_10_5_2, "settlement": mode, "settle_after_days": 0, "timezone": "Asia/Shanghai"})
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    with monkeypatch.context() as patched:
        patched.setattr(orders, "utcnow", lambda: received_utc)
        orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 1_000
    return sharer


def _available(stack: Stack, who: Principal) -> int:
    return get_store().ledger.account(stack.tenant, who.subject)["available_fen"]


@pytest.mark.parametrize(
    ("mode", "received_utc", "boundary_utc"),
    [
        # Sunday 2026-11-29 23:30 in Shanghai -> Monday 2026-11-30 00:00 Shanghai (= Sunday 16:00 UTC)
        ("weekly", datetime(2026, 11, 29, 15, 30, tzinfo=UTC), datetime(2026, 11, 29, 16, 0, tzinfo=UTC)),
        # Monday 00:00:01 in Shanghai just missed the batch: the next Monday
        ("weekly", datetime(2026, 11, 29, 16, 0, 1, tzinfo=UTC), datetime(2026, 12, 6, 16, 0, tzinfo=UTC)),
        # the last minute of November in Shanghai -> 1 December 00:00 Shanghai (= 30 November 16:00 UTC)
        ("monthly", datetime(2026, 11, 30, 15, 59, tzinfo=UTC), datetime(2026, 11, 30, 16, 0, tzinfo=UTC)),
        # 1 December 00:30 in Shanghai is still 30 November in UTC, and already December's batch
        ("monthly", datetime(2026, 11, 30, 16, 30, tzinfo=UTC), datetime(2026, 12, 31, 16, 0, tzinfo=UTC)),
    ],
)
def test_batches_settle_at_the_boundary_in_shanghai_and_only_once(
    stack: Stack,
    owner: Principal,
    mode: str,
    received_utc: datetime,
    boundary_utc: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sharer = _received_at(stack, owner, mode, received_utc, monkeypatch)

    settlements.settle(boundary_utc - timedelta(seconds=1))
    assert _available(stack, sharer) == 0  # a second before the boundary: still frozen

    settlements.settle(boundary_utc)
    assert _available(stack, sharer) == 1_000
    settlements.settle(boundary_utc)  # the run executed twice
    assert _available(stack, sharer) == 1_000
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 0
