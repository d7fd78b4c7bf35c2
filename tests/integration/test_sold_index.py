"""The sparse `sold` index as the plan simulator reads it (`chalicelib.store.sold`): every paid
order of the range, oldest payment first over every shard, as the commission rules take it, the
end of the range left out, and a reader that stops early stops its shard readers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from chalicelib.clock import iso, utcnow
from chalicelib.commission import Attribution, OrderLine
from chalicelib.store import get_store, shards, sold
from chalicelib.store.audit import canonical
from chalicelib.store.models import OrderModel
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration


def _paid(tenant: str, order_id: str, paid_at: str, *, refunded: int = 0, promoter: bool | None = False) -> None:
    lines = [
        {"product_id": "p1", "name": "商品", "qty": 2, "unit_price_fen": 500, "paid_fen": 900},
        {"product_id": "p2", "name": "赠品", "qty": 1, "unit_price_fen": 300, "paid_fen": 300},
    ]
    snapshot = {"upline": ["u1", "u2", "u3"], "share_code": "s1", "plan_version": 1}
    if promoter is not None:
        snapshot["buyer_is_promoter"] = promoter
    OrderModel(
        pk=f"{tenant}#{order_id}", tenant=tenant, order_id=order_id, buyer=f"b-{order_id}",
        buyer_key=f"{tenant}#b-{order_id}", source="miniprogram", lines=canonical(lines), list_fen=1300,
        amount_fen=1200, refunded_fen=refunded, status="paid", attribution=canonical(snapshot),
        placed_at=paid_at, paid_at=paid_at, version=2, sold_key=shards.key(f"{tenant}#sold", order_id),
    ).save()  # fmt: skip


def test_the_range_oldest_first_as_the_rules_take_it(stack: Stack) -> None:
    # Given orders paid a minute apart (written in reverse, over several shards), one refunded in
    # part and one from before the snapshot said whether the buyer was a promoter
    get_store()
    tenant = unique("wxsold").replace("-", "")
    start = utcnow().replace(microsecond=0) - timedelta(hours=1)
    times = [start + timedelta(minutes=i, microseconds=i) for i in range(12)]
    for i, at in reversed(list(enumerate(times))):
        _paid(tenant, f"o{i:02d}", iso(at), refunded=400 if i == 3 else 0, promoter=None if i == 5 else False)
    assert len({shards.shard_of(f"o{i:02d}") for i in range(12)}) > 1

    # When the range [times[1], times[10]) is read
    sales = list(sold.sales(tenant, times[1], times[10]))

    # Then orders 1 to 9 come, oldest first (the end is left out), exactly as written
    assert [s.order_id for s in sales] == [f"o{i:02d}" for i in range(1, 10)]
    assert [s.paid_at for s in sales] == times[1:10]
    first = sales[0]
    assert first.lines == (OrderLine("p1", 2, 900), OrderLine("p2", 1, 300))
    assert first.attribution == Attribution("b-o01", ("u1", "u2", "u3"), False)
    assert (first.amount_fen, first.refunded_fen, first.net_fen) == (1200, 0, 1200)
    assert sales[2].net_fen == 800
    assert sales[4].attribution.buyer_is_promoter is True  # older snapshots: as the engine reads them


def test_a_reader_that_stops_early_stops_the_shard_readers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given more orders than the readers may hold ahead of the consumer
    get_store()
    monkeypatch.setattr(sold, "BATCH", 5)
    monkeypatch.setattr(sold, "DEPTH", 1)
    tenant = unique("wxsold").replace("-", "")
    start = utcnow() - timedelta(hours=1)
    with OrderModel.batch_write() as batch:
        for i in range(200):
            at = iso(start + timedelta(seconds=i))
            batch.save(
                OrderModel(
                    pk=f"{tenant}#o{i:03d}", tenant=tenant, order_id=f"o{i:03d}", buyer="b", buyer_key=f"{tenant}#b",
                    source="miniprogram", lines="[]", list_fen=0, amount_fen=0, status="paid",
                    attribution='{"upline":[]}', placed_at=at, paid_at=at,
                    sold_key=shards.key(f"{tenant}#sold", f"o{i:03d}"),
                )
            )  # fmt: skip
    before = threading.active_count()

    # When the consumer takes three and lets go
    sales = sold.sales(tenant, start, utcnow())
    assert len([next(sales) for _ in range(3)]) == 3
    del sales

    # Then the readers end instead of waiting for room forever
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
