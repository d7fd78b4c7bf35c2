"""Paid orders as the plan simulator replays them: the sparse `sold` index read shard by shard.

The index projects what the commission rules need (lines, attribution snapshot, amounts), so a
replay reads nothing else per order. Each item goes straight to the rules' own inputs
(`commission.OrderLine`, `commission.Attribution`) instead of a full `Order` first: a replay of
10,000 orders is bound by this per-item work, not by the rules.

Each shard is read on a thread of its own and handed over in batches (a queue hand-off per item
cost as much as parsing it); a reader holds at most `DEPTH` batches ahead of the consumer, so
memory stays flat however many days are replayed, and a consumer that stops early stops them.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.clock import iso
from chalicelib.commission import Attribution, OrderLine
from chalicelib.store import shards
from chalicelib.store.models import OrderModel


@dataclass(frozen=True, slots=True)
class _End:
    error: Exception | None = None


class _ReadAhead:
    """Items of an iterator read on a daemon thread up to `depth` ahead of the consumer; an error
    of the reader is raised in the consumer, and a consumer that stops early stops the reader."""

    def __init__(self, items: Iterator[Any], depth: int) -> None:
        self._items = items
        self._buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

    def _offer(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._offer(item):
                    return
        except Exception as exc:  # handed to the consumer, which raises it
            self._offer(_End(exc))
            return
        self._offer(_End())

    def __iter__(self) -> Iterator[Any]:
        threading.Thread(target=self._produce, daemon=True).start()
        try:
            while not isinstance(item := self._buffer.get(), _End):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            self._stop.set()


BATCH = 250  # items a shard's reader hands over at once
DEPTH = 8  # batches a shard's reader may hold before the consumer takes them


@dataclass(frozen=True, slots=True)
class Sale:
    """A paid order as the commission rules replay it."""

    order_id: str
    paid_at: datetime
    amount_fen: int
    refunded_fen: int
    lines: tuple[OrderLine, ...]
    attribution: Attribution

    @property
    def net_fen(self) -> int:
        """What is still paid after refunds."""
        return self.amount_fen - self.refunded_fen


def query(partition: str, low: str, high: str) -> Iterator[OrderModel]:
    """One shard's items of the `sold` index paid between `low` and `high` (ISO, both included),
    oldest first: the one read of a replay (its benchmark reads with it too)."""
    return OrderModel.sold.query(partition, OrderModel.paid_at.between(low, high))


def to_sale(item: OrderModel) -> Sale:
    """An index item as the rules take it, read from the item's values (PynamoDB's attribute
    descriptors cost as much as the JSON). `paid_at` is written by `clock.iso`, which
    `datetime.fromisoformat` reads back exactly, at a tenth of `strptime`'s cost."""
    values = item.attribute_values
    snapshot = json.loads(values["attribution"])
    return Sale(
        order_id=values["order_id"],
        paid_at=datetime.fromisoformat(values["paid_at"]),
        amount_fen=int(values["amount_fen"]),
        refunded_fen=int(values.get("refunded_fen") or 0),
        lines=tuple([OrderLine(x["product_id"], x["qty"], x["paid_fen"]) for x in json.loads(values["lines"])]),
        attribution=Attribution(
            values["buyer"], tuple(snapshot.get("upline") or ()), bool(snapshot.get("buyer_is_promoter", True))
        ),
    )


def _paid_at(sale: Sale) -> tuple[datetime, str]:
    return sale.paid_at, sale.order_id


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def sales(tenant: str, start: datetime, end: datetime) -> Iterator[Sale]:
    """Every order of the tenant paid in [start, end), oldest payment first (ties by order id)."""
    low, high = iso(start), iso(end)

    def shard(partition: str) -> Iterator[Sale]:
        found = (to_sale(item) for item in query(partition, low, high) if item.attribute_values["paid_at"] != high)
        return itertools.chain.from_iterable(iter(_ReadAhead(_batches(found, BATCH), DEPTH)))

    return shards.merged(f"{tenant}#sold", shard, _paid_at)
