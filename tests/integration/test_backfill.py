"""`python -m devtools.backfill`: orders written before the `listed` and `sold` indexes get their
keys, once, in their own tenant only, without a new version for the orders stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.clock import iso, utcnow
from chalicelib.store import backfill, get_store, shards
from chalicelib.store.models import OrderModel
from devtools import backfill as cli
from tests.stack import Stack, reset_caches, unique

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _models_on_this_stack(stack: Stack) -> None:
    """The models point at this session's DynamoDB Local (another test may have pointed them at
    one of its own, since stopped): `get_store()` configures them, as every service does."""
    reset_caches()
    get_store()


def _old_order(tenant: str, order_id: str, status: str, *, paid: bool, **keys: Any) -> None:
    """An order as the app wrote it before the indexes existed (no listed_key, no sold_key)."""
    now = iso(utcnow())
    OrderModel(
        pk=f"{tenant}#{order_id}", tenant=tenant, order_id=order_id, buyer="b1", buyer_key=f"{tenant}#b1",
        source="miniprogram", lines="[]", list_fen=1000, amount_fen=1000, status=status,
        attribution=json.dumps({"upline": []}), placed_at=now, paid_at=now if paid else None, version=3, **keys,
    ).save()  # fmt: skip


def _keys(tenant: str, order_id: str) -> tuple[str | None, str | None, int]:
    item = OrderModel.get(f"{tenant}#{order_id}", consistent_read=True)
    return item.listed_key, item.sold_key, int(item.version)


def test_old_orders_get_their_index_keys_once(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # Given orders of before the indexes: placed, paid, received, cancelled after a late payment;
    # one that has its keys already; and another tenant's old order
    tenant, other = unique("wxbf").replace("-", ""), unique("wxbg").replace("-", "")
    _old_order(tenant, "placed", "created", paid=False)
    _old_order(tenant, "paid", "paid", paid=True)
    _old_order(tenant, "received", "received", paid=True)
    _old_order(tenant, "late", "cancelled", paid=True)
    kept = shards.key(f"{tenant}#orders", "new")
    _old_order(tenant, "new", "paid", paid=True, listed_key=kept, sold_key=shards.key(f"{tenant}#sold", "new"))
    _old_order(other, "theirs", "paid", paid=True)

    # When a dry run counts, nothing is written
    dry = backfill.order_index_keys(tenant, dry_run=True)
    assert (dry.scanned, dry.listed, dry.sold) == (5, 4, 2)
    assert _keys(tenant, "paid") == (None, None, 3)

    # When it runs
    assert cli.main(["--tenant", tenant]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "tenant": tenant, "dry_run": False, "scanned": 5, "listed": 4, "sold": 2, "raced": 0,
    }  # fmt: skip

    # Then every order is in the listed index, the paid ones in the sold index, versions unchanged
    for order_id in ("placed", "paid", "received", "late"):
        assert _keys(tenant, order_id)[0] == shards.key(f"{tenant}#orders", order_id)
        assert _keys(tenant, order_id)[2] == 3  # no new version: the commission engine ignores it
    assert _keys(tenant, "paid")[1] == shards.key(f"{tenant}#sold", "paid")
    assert _keys(tenant, "received")[1] == shards.key(f"{tenant}#sold", "received")
    assert _keys(tenant, "placed")[1] is None and _keys(tenant, "late")[1] is None
    assert _keys(tenant, "new")[0] == kept
    assert _keys(other, "theirs")[:2] == (None, None)
    listed = {i.order_id for p in shards.keys(f"{tenant}#orders") for i in OrderModel.listed.query(p)}
    assert listed == {"placed", "paid", "received", "late", "new"}

    # And a second run sets nothing
    again = backfill.order_index_keys(tenant)
    assert (again.scanned, again.listed, again.sold, again.raced) == (5, 0, 0, 0)


def test_a_key_the_app_sets_meanwhile_is_left_as_it_is(stack: Stack) -> None:
    tenant = unique("wxbr").replace("-", "")
    _old_order(tenant, "o1", "paid", paid=True)
    original_scan = OrderModel.scan

    def scan_then_app_writes(*args: Any, **kwargs: Any) -> Any:
        for item in original_scan(*args, **kwargs):
            # the app sets the key between the backfill's read and its write
            OrderModel(pk=item.pk).update(actions=[OrderModel.listed_key.set("app-set")])
            yield item

    OrderModel.scan = scan_then_app_writes  # type: ignore[method-assign]
    try:
        filled = backfill.order_index_keys(tenant)
    finally:
        OrderModel.scan = original_scan  # type: ignore[method-assign]
    assert filled.raced == 1
    assert _keys(tenant, "o1")[0] == "app-set"
