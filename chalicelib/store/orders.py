"""Orders: priced lines, the attribution snapshot, status moves and refunds (each a new version)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page
from chalicelib.orders import Order, OrderStatus, PricedLine, Snapshot
from chalicelib.store.audit import canonical, version_actions
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor, unless_exists
from chalicelib.store.models import OrderModel


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
        discount_fen=int(item.discount_fen or 0),
        coupon=item.coupon,
        refunded_fen=int(item.refunded_fen or 0),
        paid_at=parse_iso(item.paid_at) if item.paid_at else None,
        received_at=parse_iso(item.received_at) if item.received_at else None,
        transaction_id=item.transaction_id,
        source=item.source,
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
    if the order is still as read (so `refunded_before_fen` in the event is exact)."""
    actions = [OrderModel.refunded_fen.add(refund_fen), *version_actions(OrderModel, event, when)]
    condition = OrderModel.status.is_in(OrderStatus.PAID.value, OrderStatus.RECEIVED.value) & (
        OrderModel.refunded_fen <= order.amount_fen - refund_fen
    )
    if exact:
        condition &= (OrderModel.amount_fen == order.amount_fen) & (OrderModel.refunded_fen == order.refunded_fen)
    return actions, condition


class OrderStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, order: Order, event: AuditEvent) -> bool:
        """Store a new order as version 1 (audited by the stream)."""
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
            version=1,
            event_at=iso(order.placed_at),
            event_action=event.action,
            event_actor=event.actor,
            event_data=canonical(event.data),
        )
        return unless_exists(lambda: item.save(condition=OrderModel.pk.does_not_exist()))

    def get(self, tenant: str, order_id: str) -> Order | None:
        try:
            return to_order(OrderModel.get(order_key(tenant, order_id), consistent_read=True))
        except OrderModel.DoesNotExist:
            return None

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
    ) -> bool:
        """Move an order from one of `expected` to `status`; False when it is not in `expected`
        (or, with `amount_fen`, when that is not the order's amount: a payment of another sum)."""
        actions = [OrderModel.status.set(status.value), *version_actions(OrderModel, event, when)]
        for name, value in (extra or {}).items():
            actions.append(getattr(OrderModel, name).set(value))
        # Only paid orders wait for receipt: they alone are in the sparse open_orders index.
        if status is OrderStatus.PAID:
            actions.append(OrderModel.open_key.set(f"{tenant}#paid"))
        else:
            actions.append(OrderModel.open_key.remove())
        condition = OrderModel.status.is_in(*[s.value for s in expected])
        if amount_fen is not None:
            condition &= OrderModel.amount_fen == amount_fen
        return unless_exists(
            lambda: OrderModel(order_key(tenant, order_id)).update(actions=actions, condition=condition)
        )

    def add_refund(self, order: Order, refund_fen: int, *, when: datetime, event: AuditEvent) -> bool:
        """Raise refunded_fen by `refund_fen` unless that would exceed the paid amount."""
        actions, condition = refund_update(order, refund_fen, event=event, when=when, exact=False)
        return unless_exists(
            lambda: OrderModel(order_key(order.tenant, order.id)).update(actions=actions, condition=condition)
        )

    def paid_before(self, tenant: str, before: datetime, limit: int) -> list[str]:
        """Ids of paid, not yet received orders paid before `before`, oldest first (one page)."""
        query = OrderModel.open_orders.query(
            f"{tenant}#paid", OrderModel.paid_at < iso(before), limit=limit, attributes_to_get=["order_id"]
        )
        return [item.order_id for item in query]

    def by_buyer(self, tenant: str, buyer: str, cursor: str | None, limit: int) -> Page[dict[str, Any]]:
        key = f"{tenant}#{buyer}"
        start = decode_cursor(cursor, hash_attr="buyer_key", hash_value=key)
        result = OrderModel.by_buyer.query(key, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        items = [
            {
                "id": i.order_id,
                "status": i.status,
                "amount_fen": int(i.amount_fen),
                "refunded_fen": int(i.refunded_fen or 0),
                "placed_at": i.placed_at,
            }
            for i in result
        ]
        return Page(items, encode_cursor(result.last_evaluated_key))
