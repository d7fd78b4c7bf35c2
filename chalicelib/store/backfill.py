"""Repairs of data written before a later index existed: the orders' `listed_key` (the console's
orders list and the orders export) and `sold_key` (the plan simulator's paid orders).

Run from the command line (`python -m devtools.backfill`) with an operator's credentials: no
function reaches this module, so none is granted its Scan (infra/iam.py). Each key is set only
where it is missing (a condition on the write), so a second run changes nothing and a run next to
live traffic never overwrites a key the app set. The order's version is not moved: the orders
stream sees no new version and the commission engine ignores the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.store.models import OrderModel
from chalicelib.store.orders import listed_key, sold_key

READ = ["pk", "tenant", "order_id", "status", "paid_at", "listed_key", "sold_key"]


@dataclass
class Filled:
    scanned: int = 0
    listed: int = 0  # orders given their `listed_key`
    sold: int = 0  # paid orders given their `sold_key`
    raced: int = 0  # keys the app set meanwhile (left as they were)


def sold(status: str, paid_at: str | None) -> bool:
    """Whether an order belongs in the `sold` index: it reached payment (a cancelled order that
    WeChat paid late is refunded at once and never sold)."""
    return bool(paid_at) and status != "cancelled"


def order_index_keys(tenant: str, *, dry_run: bool = False) -> Filled:
    """Set the missing index keys of one tenant's orders (a filtered Scan of the orders table),
    each key by a write of its own, so a race on one never holds the other back."""
    filled = Filled()
    for item in OrderModel.scan(OrderModel.tenant == tenant, attributes_to_get=READ):
        filled.scanned += 1
        if item.listed_key is None:
            key = listed_key(tenant, item.order_id)
            filled.listed += _set_missing(item.pk, OrderModel.listed_key, key, filled, dry_run)
        if item.sold_key is None and sold(item.status, item.paid_at):
            key = sold_key(tenant, item.order_id)
            filled.sold += _set_missing(item.pk, OrderModel.sold_key, key, filled, dry_run)
    return filled


def _set_missing(pk: str, attribute: Any, value: str, filled: Filled, dry_run: bool) -> int:
    """1 when `attribute` was set (or would be, in a dry run), 0 when the app set it meanwhile."""
    if dry_run:
        return 1
    try:
        OrderModel(pk=pk).update(actions=[attribute.set(value)], condition=attribute.does_not_exist())
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
        filled.raced += 1
        return 0
    return 1
