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

from chalicelib.store import shards
from chalicelib.store.models import OrderModel

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
    """Set the missing index keys of one tenant's orders (a filtered Scan of the orders table)."""
    filled = Filled()
    for item in OrderModel.scan(OrderModel.tenant == tenant, attributes_to_get=READ):
        filled.scanned += 1
        actions: list[Any] = []
        condition: Any = None
        if item.listed_key is None:
            actions.append(OrderModel.listed_key.set(shards.key(f"{tenant}#orders", item.order_id)))
            condition = OrderModel.listed_key.does_not_exist()
            filled.listed += 1
        if item.sold_key is None and sold(item.status, item.paid_at):
            actions.append(OrderModel.sold_key.set(shards.key(f"{tenant}#sold", item.order_id)))
            missing = OrderModel.sold_key.does_not_exist()
            condition = missing if condition is None else condition & missing
            filled.sold += 1
        if not actions or dry_run:
            continue
        try:
            OrderModel(pk=item.pk).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
            filled.raced += 1
    return filled
