"""Orders: priced lines, the attribution snapshot, status moves and refunds (each a new version)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib import counters
from chalicelib.clock import iso, parse_iso
from chalicelib.counters import Deltas
from chalicelib.entities import AuditEvent, Page
from chalicelib.errors import InvalidInput
from chalicelib.orders import Order, OrderStatus, PricedLine, Refund, RefundState, Snapshot
from chalicelib.retry import Retry
from chalicelib.store import audit, shards, stats
from chalicelib.store.audit import canonical, version_actions
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AuditModel, OrderModel

VERSION_RACES = Retry.at_once(5)  # another writer took the order's next version: re-read, decide again


def order_key(tenant: str, order_id: str) -> str:
    return f"{tenant}#{order_id}"


def _lines_json(lines: Iterable[PricedLine]) -> str:
    return canonical(
        [
            {
                "product_id": x.product_id,
                "name": x.name,
                "qty": x.qty,
                "unit_price_fen": x.unit_price_fen,
                "paid_fen": x.paid_fen,
            }
            for x in lines
        ]
    )


def _snapshot_json(snapshot: Snapshot) -> str:
    return canonical(
        {
            "upline": list(snapshot.upline),
            "share_code": snapshot.share_code,
            "plan_version": snapshot.plan_version,
            "buyer_is_promoter": snapshot.buyer_is_promoter,
        }
    )


def _refunds_json(refunds: Iterable[Refund]) -> str:
    return canonical(
        {
            r.number: {
                "amount_fen": r.amount_fen,
                "state": r.state.value,
                "reason": r.reason,
                "requested_at": iso(r.requested_at),
                "actor": r.actor,
                "key": r.key,
                "late_payment": r.late_payment,
            }
            for r in refunds
        }
    )


def _refunds(raw: str | None) -> tuple[Refund, ...]:
    data = json.loads(raw) if raw else {}
    return tuple(
        Refund(
            number=number,
            amount_fen=int(r["amount_fen"]),
            state=RefundState(r["state"]),
            reason=str(r.get("reason") or ""),
            requested_at=parse_iso(r["requested_at"]),
            actor=str(r.get("actor") or ""),
            key=r.get("key"),
            late_payment=bool(r.get("late_payment")),
        )
        for number, r in sorted(data.items())
    )


def to_order(item: OrderModel) -> Order:
    snap = json.loads(item.attribution)
    return Order(
        tenant=item.tenant,
        id=item.order_id,
        buyer=item.buyer,
        lines=tuple(PricedLine(**line) for line in json.loads(item.lines)),
        status=OrderStatus(item.status),
        snapshot=Snapshot(
            upline=tuple(snap.get("upline") or ()),
            share_code=snap.get("share_code"),
            plan_version=snap.get("plan_version"),
            buyer_is_promoter=bool(snap.get("buyer_is_promoter", True)),
        ),
        placed_at=parse_iso(item.placed_at),
        version=int(item.version or 0),
        audit_hash=item.audit_hash,
        discount_fen=int(item.discount_fen or 0),
        coupon=item.coupon,
        refunded_fen=int(item.refunded_fen or 0),
        paid_at=parse_iso(item.paid_at) if item.paid_at else None,
        received_at=parse_iso(item.received_at) if item.received_at else None,
        transaction_id=item.transaction_id,
        source=item.source,
        refunds=_refunds(item.refunds),
        prepaid_at=parse_iso(item.prepaid_at) if item.prepaid_at else None,
        pay_expires_at=parse_iso(item.pay_expires_at) if item.pay_expires_at else None,
        pending_since=parse_iso(item.pending_since) if item.pending_since else None,
    )


def order_from_image(image: Mapping[str, Any]) -> Order:
    """An order from a stream image (deserialised attribute values)."""
    item = OrderModel()
    for name in OrderModel.get_attributes():
        if name in image and image[name] is not None:
            value = image[name]
            setattr(
                item,
                name,
                int(value) if isinstance(value, (int, float)) or type(value).__name__ == "Decimal" else value,
            )
    return to_order(item)


def refund_update(
    order: Order, refund_fen: int, *, event: AuditEvent, when: datetime, exact: bool
) -> tuple[list[Any], Any]:
    """The update that adds a refund to an order, never beyond what was paid; with `exact`, only
    if the order is still as read (so `refunded_before_fen` in the event is exact). The caller
    adds the version move (`OrderStore.versioned`)."""
    actions = [OrderModel.refunded_fen.add(refund_fen)]
    condition = OrderModel.status.is_in(OrderStatus.PAID.value, OrderStatus.RECEIVED.value) & (
        OrderModel.refunded_fen <= order.amount_fen - refund_fen
    )
    if exact:
        condition &= (OrderModel.amount_fen == order.amount_fen) & (OrderModel.refunded_fen == order.refunded_fen)
    return actions, condition


def _counters(tenant: str, order: Order, event: AuditEvent, when: datetime) -> tuple[Deltas, bool]:
    """The report counters an order's new version adds to (in its transaction, so a retried
    request or a replay counts nothing twice), and whether it is the buyer's first paid order."""
    if event.action == "order.paid":
        snapshot = order.snapshot
        sources = counters.Sources.of(
            snapshot.share_code,
            stats.channel(tenant, snapshot.share_code),
            snapshot.upline,
            ((line.product_id, line.paid_fen) for line in order.lines),
        )
        first = stats.first_order_of(tenant, order.buyer) is None
        return counters.order_paid(order.amount_fen, when, stats.timezone(tenant), sources, first_order=first), first
    if event.action in ("order.refunded", "order.refund_failed"):
        refund = order.refund(str(event.data.get("refund_id")))
        late = refund.late_payment if refund is not None else False
        return counters.order_refund(event.action, event.data, late, when, stats.timezone(tenant)), False
    return {}, False


def _first(row: tuple[str, str]) -> tuple[str, str]:
    return row


def listed_key(tenant: str, order_id: str) -> str:
    """The order's partition of the `listed` index (every order, from its creation)."""
    return shards.key(f"{tenant}#orders", order_id)


def sold_key(tenant: str, order_id: str) -> str:
    """The order's partition of the sparse `sold` index (set when the order is paid)."""
    return shards.key(f"{tenant}#sold", order_id)


class ExtraWriteRefused(Exception):
    """The write added to an order's change (e.g. an event marker) found its condition false."""


# What a change of an order is: the update's actions and condition and its audit event, or None
# when the order, as just read, is not one this change applies to.
Change = tuple[list[Any], Any, AuditEvent] | None


class OrderStore:
    """Orders. Every change is a new version written in one transaction with its audit record,
    hash-chained onto the previous one (the chain's head is kept on the order): nothing about an
    order's history depends on a stream having run."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, order: Order, event: AuditEvent) -> bool:
        """Store a new order as version 1 with its first audit record; False if the id is taken."""
        record = audit.build(order.tenant, event, order.placed_at, None, record_id=f"v{1:010d}")
        item = OrderModel(
            pk=order_key(order.tenant, order.id),
            tenant=order.tenant,
            order_id=order.id,
            buyer=order.buyer,
            buyer_key=f"{order.tenant}#{order.buyer}",
            source=order.source,
            lines=_lines_json(order.lines),
            list_fen=order.list_fen,
            discount_fen=order.discount_fen,
            amount_fen=order.amount_fen,
            refunded_fen=0,
            status=order.status.value,
            coupon=order.coupon,
            attribution=_snapshot_json(order.snapshot),
            placed_at=iso(order.placed_at),
            listed_key=listed_key(order.tenant, order.id),
            version=1,
            audit_hash=record.hash,
            event_at=iso(order.placed_at),
            event_action=event.action,
            event_actor=event.actor,
            event_data=canonical(event.data),
        )

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=OrderModel.pk.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def get(self, tenant: str, order_id: str) -> Order | None:
        item = self._item(tenant, order_id)
        return to_order(item) if item is not None else None

    @staticmethod
    def _item(tenant: str, order_id: str) -> OrderModel | None:
        try:
            return OrderModel.get(order_key(tenant, order_id), consistent_read=True)
        except OrderModel.DoesNotExist:
            return None

    def versioned(
        self,
        tenant: str,
        order_id: str,
        change: Callable[[Order], Change],
        *,
        when: datetime,
        extra_writes: Callable[[TransactWrite], None] | None = None,
        retry: Retry = VERSION_RACES,
        read: Order | None = None,
    ) -> bool:
        """Apply `change` to the order as it is now, as its next version with its audit record, in
        one transaction conditional on the version read (re-read and retried when another writer
        got there first). `read` is the order as the caller just read it (saves the first read).
        False when `change` did not apply."""
        for _ in retry:
            current = read if read is not None else self.get(tenant, order_id)
            read = None
            if current is None:
                return False
            decided = change(current)
            if decided is None:
                return False
            actions, condition, event = decided
            version = current.version + 1
            record = audit.build(tenant, event, when, current.audit_hash, record_id=f"v{version:010d}")
            actions = [*actions, *version_actions(OrderModel, event, when), OrderModel.audit_hash.set(record.hash)]
            guard = OrderModel.version == current.version
            guard = guard & condition if condition is not None else guard

            counted, first = _counters(tenant, current, event, when)

            def body(
                tx: TransactWrite,
                actions: list[Any] = actions,
                guard: Any = guard,
                record: Any = record,
                counted: Deltas = counted,
                first: bool = first,
                buyer: str = current.buyer,
            ) -> None:
                if extra_writes is not None:
                    extra_writes(tx)
                tx.update(OrderModel(order_key(tenant, order_id)), actions=actions, condition=guard)
                tx.save(record, condition=AuditModel.pk.does_not_exist())
                if first:  # a concurrent payment of the buyer's marked first: read and decide again
                    stats.mark_first_order(tx, tenant, buyer, order_id)
                stats.add(tx, tenant, counted)

            outcome = self._tx.run(body)
            if outcome.committed:
                return True
            if extra_writes is not None and 0 in outcome.failed_items:
                raise ExtraWriteRefused(order_id)  # e.g. the event was applied before
        return False

    def transition(
        self,
        tenant: str,
        order_id: str,
        expected: tuple[OrderStatus, ...],
        status: OrderStatus,
        *,
        when: datetime,
        event: AuditEvent,
        extra: Mapping[str, str] | None = None,
        amount_fen: int | None = None,
        read: Order | None = None,
    ) -> bool:
        """Move an order from one of `expected` to `status`; False when it is not in `expected`
        (or, with `amount_fen`, when that is not the order's amount: a payment of another sum).
        `read`: the order as the caller just read it (saves a read)."""

        def change(order: Order) -> Change:
            if order.status not in expected or (amount_fen is not None and order.amount_fen != amount_fen):
                return None
            actions = [OrderModel.status.set(status.value)]
            for name, value in (extra or {}).items():
                actions.append(getattr(OrderModel, name).set(value))
            # Only paid orders wait for receipt: they alone are in the sparse open_orders index.
            if status is OrderStatus.PAID:
                actions.append(OrderModel.open_key.set(shards.key(f"{tenant}#paid", order_id)))
                actions.append(OrderModel.sold_key.set(sold_key(tenant, order_id)))
            else:
                actions.append(OrderModel.open_key.remove())
            if status is not OrderStatus.CREATED and not any(r.state is RefundState.REQUESTED for r in order.refunds):
                actions += [OrderModel.pending_key.remove(), OrderModel.pending_since.remove()]
            return actions, OrderModel.status.is_in(*[s.value for s in expected]), event

        return self.versioned(tenant, order_id, change, when=when, read=read)

    def prepaid(self, order: Order, *, when: datetime, expires_at: datetime, event: AuditEvent) -> bool:
        """Record that the order was handed to WeChat Pay (once): it joins the unpaid index that
        the payment reconciliation job reads, until it is paid or cancelled."""

        def change(current: Order) -> Change:
            if current.status is not OrderStatus.CREATED or current.prepaid_at is not None:
                return None
            actions = [
                OrderModel.prepaid_at.set(iso(when)),
                OrderModel.pay_expires_at.set(iso(expires_at)),
                OrderModel.pending_key.set(shards.key(f"{order.tenant}#pending", order.id)),
                OrderModel.pending_since.set(iso(when)),
            ]
            return actions, OrderModel.status == OrderStatus.CREATED.value, event

        return self.versioned(order.tenant, order.id, change, when=when)

    def set_refunds(
        self,
        order: Order,
        decide: Callable[[Order], tuple[tuple[Refund, ...], int, AuditEvent] | None],
        *,
        when: datetime,
    ) -> Order | None:
        """Change an order's refunds: `decide` returns (refunds after, refunded_fen delta, event)
        from the order as it is now, or None when nothing is to change. `order` is the order as
        the caller just read it (the first attempt starts from it; the version guard re-reads)."""

        def change(current: Order) -> Change:
            decided = decide(current)
            if decided is None:
                return None
            refunds, delta, event = decided
            actions: list[Any] = [OrderModel.refunds.set(_refunds_json(refunds))]
            open_refunds = any(r.state is RefundState.REQUESTED for r in refunds)
            if open_refunds and not current.pending_since:
                actions += [
                    OrderModel.pending_key.set(shards.key(f"{order.tenant}#pending", order.id)),
                    OrderModel.pending_since.set(iso(when)),
                ]
            elif not open_refunds and current.status is not OrderStatus.CREATED:
                actions += [OrderModel.pending_key.remove(), OrderModel.pending_since.remove()]
            condition: Any = None
            if delta:
                actions.append(OrderModel.refunded_fen.add(delta))
                condition = (OrderModel.refunded_fen == current.refunded_fen) & (
                    OrderModel.refunded_fen <= current.amount_fen - delta
                )
            return actions, condition, event

        return (
            self.get(order.tenant, order.id)
            if self.versioned(order.tenant, order.id, change, when=when, read=order)
            else None
        )

    def add_refund(self, order: Order, refund_fen: int, *, when: datetime, event: AuditEvent) -> bool:
        """Raise refunded_fen by `refund_fen` unless that would exceed the paid amount."""

        def change(current: Order) -> Change:
            if current.status not in (OrderStatus.PAID, OrderStatus.RECEIVED) or refund_fen > current.refundable_fen:
                return None
            actions, condition = refund_update(current, refund_fen, event=event, when=when, exact=False)
            return actions, condition, event

        return self.versioned(order.tenant, order.id, change, when=when)

    def pending_at_wechat(self, tenant: str, before: datetime, limit: int) -> list[str]:
        """Ids of orders waiting for WeChat Pay since before `before` (unpaid after a prepay, or with
        a refund in progress), oldest first over every shard (one page)."""

        def query(partition: str) -> list[tuple[str, str]]:
            found = OrderModel.pending_at_wechat.query(
                partition, OrderModel.pending_since < iso(before), limit=limit,
                attributes_to_get=["order_id", "pending_since"],
            )  # fmt: skip
            return [(str(i.pending_since), i.order_id) for i in found]

        return [order_id for _, order_id in shards.first(f"{tenant}#pending", query, _first, limit)]

    def paid_before(self, tenant: str, before: datetime, limit: int) -> list[str]:
        """Ids of paid, not yet received orders paid before `before`, oldest first over every shard
        (one page)."""

        def query(partition: str) -> list[tuple[str, str]]:
            found = OrderModel.open_orders.query(
                partition, OrderModel.paid_at < iso(before), limit=limit, attributes_to_get=["order_id", "paid_at"]
            )
            return [(str(i.paid_at), i.order_id) for i in found]

        return [order_id for _, order_id in shards.first(f"{tenant}#paid", query, _first, limit)]

    def by_buyer(self, tenant: str, buyer: str, cursor: str | None, limit: int) -> Page[dict[str, Any]]:
        key = f"{tenant}#{buyer}"
        start = decode_cursor(cursor, hash_attr="buyer_key", hash_value=key)
        result = OrderModel.by_buyer.query(key, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        keys = [i.pk for i in result]
        shown = ["pk", "order_id", "status", "amount_fen", "refunded_fen", "placed_at"]
        found = {i.pk: i for i in OrderModel.batch_get(keys, attributes_to_get=shown)} if keys else {}
        items = [
            {
                "id": i.order_id,
                "status": i.status,
                "amount_fen": int(i.amount_fen),
                "refunded_fen": int(i.refunded_fen or 0),
                "placed_at": i.placed_at,
            }
            for i in (found[k] for k in keys if k in found)
        ]
        return Page(items, encode_cursor(result.last_evaluated_key))

    def listed(
        self,
        tenant: str,
        *,
        start: datetime,
        end: datetime,
        status: str | None,
        promoter: str | None,
        cursor: str | None,
        limit: int,
    ) -> Page[dict[str, Any]]:
        """One page of the orders placed in [start, end), newest first over every shard of the
        `listed` index, optionally only those in `status` or with `promoter` at level 1-3 of their
        attribution. `shards.page` keeps filtered shards in order across pages."""
        condition: Any = None
        if promoter is not None:  # the attribution never changes: the index holds it
            condition = OrderModel.attribution.contains(json.dumps(promoter))  # narrows; checked exactly below
        low, high = iso(start), iso(end)

        def read(partition: str, start_key: dict[str, Any] | None, room: int) -> tuple[list[Any], shards.Stop | None]:
            if start_key is not None and not _is_key(start_key, partition):
                raise InvalidInput("cursor is not valid", code="invalid_cursor")
            result = OrderModel.listed.query(
                partition,
                OrderModel.placed_at.between(low, high),
                filter_condition=condition,
                scan_index_forward=False,
                limit=room,
                last_evaluated_key=start_key,
            )
            # One index page only: iterating the result would read on until `room` items match.
            page = next(result.page_iter)
            items = [OrderModel.from_raw_data(raw) for raw in page.get("Items", [])]
            items = [i for i in items if str(i.placed_at) != high]
            if promoter is not None:
                items = [i for i in items if promoter in (json.loads(i.attribution).get("upline") or ())]
            if status is not None:  # the filter needs the state of everything read
                items = [i for i in _current(items) if i.status == status]
            # Sorted by the index's range key alone: equal times keep the order the index gave them.
            rows = [(str(i.placed_at), _listed_key(i, partition), i) for i in items]
            stop = result.page_iter.last_evaluated_key
            return rows, (stop, stop["placed_at"]["S"]) if stop else None

        items, next_cursor = shards.page(f"{tenant}#orders", read, cursor, limit, reverse=True)
        if status is None:  # only the page's orders: each shard read up to a page of its own
            items = _current(items)
        return Page([_listed_row(i) for i in items], next_cursor)


LISTED_READ = ["pk", "order_id", "buyer", "status", "amount_fen", "refunded_fen", "placed_at", "paid_at", "attribution"]


def _current(items: list[Any]) -> list[Any]:
    """The orders of these index items as they are now (the `listed` index holds only what never
    changes), in the same order; one batch get."""
    keys = [i.pk for i in items]
    now = {i.pk: i for i in OrderModel.batch_get(keys, attributes_to_get=LISTED_READ)} if keys else {}
    return [now[i.pk] for i in items if i.pk in now]


def _listed_row(item: Any) -> dict[str, Any]:
    snap = json.loads(item.attribution)
    return {
        "id": item.order_id,
        "buyer": item.buyer,
        "status": item.status,
        "amount_fen": int(item.amount_fen),
        "refunded_fen": int(item.refunded_fen or 0),
        "placed_at": item.placed_at,
        "paid_at": item.paid_at,
        "upline": list(snap.get("upline") or ()),
    }


def _is_key(key: dict[str, Any], partition: str) -> bool:
    return (
        key.get("listed_key") == {"S": partition}
        and set(key) == {"pk", "listed_key", "placed_at"}
        and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values())
    )


def _listed_key(item: Any, partition: str) -> dict[str, Any]:
    return {"pk": {"S": item.pk}, "listed_key": {"S": partition}, "placed_at": {"S": str(item.placed_at)}}
