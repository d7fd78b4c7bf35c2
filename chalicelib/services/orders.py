"""Orders from the mini-program: place, pay (WeChat Pay JSAPI), receive, cancel, refund."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from chalicelib import orders as rules
from chalicelib.auth import require_role
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import BadRequest, Conflict, NotFound, Unauthorized
from chalicelib.observability import count, logger
from chalicelib.orders import Order, OrderStatus, Snapshot
from chalicelib.services import catalog, shares
from chalicelib.store import get_store
from chalicelib.wechat import get_pay

MAX_LINES = 50
MAX_QTY = 999


def new_order_id() -> str:
    """Time-sortable, 21 characters: a valid WeChat out_trade_no (6-32 alphanumerics)."""
    return "o" + utcnow().strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


def order_view(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "status": order.status.value,
        "amount_fen": order.amount_fen,
        "list_fen": order.list_fen,
        "discount_fen": order.discount_fen,
        "refunded_fen": order.refunded_fen,
        "coupon_id": order.coupon,
        "share_code": order.snapshot.share_code,
        "lines": [
            {
                "product_id": x.product_id,
                "name": x.name,
                "qty": x.qty,
                "unit_price_fen": x.unit_price_fen,
                "paid_fen": x.paid_fen,
            }
            for x in order.lines
        ],
        "placed_at": iso(order.placed_at),
        "paid_at": iso(order.paid_at) if order.paid_at else None,
        "received_at": iso(order.received_at) if order.received_at else None,
    }


def _priced_items(tenant: str, lines: Sequence[tuple[str, int]]) -> list[tuple[str, str, int, int]]:
    if not 1 <= len(lines) <= MAX_LINES:
        raise BadRequest(f"an order has 1 to {MAX_LINES} lines", code="invalid_lines")
    wanted = [pid for pid, _ in lines]
    if len(set(wanted)) != len(wanted):
        raise BadRequest("each product may appear once; use qty", code="invalid_lines")
    catalog = get_store().products.get_many(tenant, wanted)
    items = []
    for product_id, qty in lines:
        product = catalog.get(product_id)
        if product is None or not product.active:
            raise NotFound(f"product {product_id} is not for sale", code="unknown_product")
        if not 1 <= qty <= MAX_QTY:
            raise BadRequest(f"qty must be between 1 and {MAX_QTY}", code="invalid_qty")
        items.append((product_id, product.name, qty, product.price_fen))
    return items


def place(
    principal: Principal, lines: Sequence[tuple[str, int]], share_code: str | None, coupon_id: str | None
) -> Order:
    """Price the order on the server, apply the coupon, freeze the attribution snapshot."""
    store = get_store()
    tenant = principal.tenant
    buyer = store.users.get(tenant, principal.subject)
    if buyer is None:
        raise Unauthorized("the user of this token does not exist", code="unknown_user")
    if share_code is not None:
        shares.get(tenant, share_code)  # an unknown code is a 404, never a silent attribution
    items = _priced_items(tenant, lines)
    order_id = new_order_id()
    discount = _coupon_discount(principal, coupon_id, items, order_id) if coupon_id else 0
    order = Order(
        tenant=tenant,
        id=order_id,
        buyer=buyer.id,
        lines=rules.price(items, discount),
        status=OrderStatus.CREATED,
        snapshot=Snapshot(
            upline=buyer.upline,
            share_code=share_code,
            plan_version=store.plans.active_version(tenant),
            buyer_is_promoter=buyer.promoter,
        ),
        placed_at=utcnow(),
        discount_fen=discount,
        coupon=coupon_id,
    )
    data = {"amount_fen": order.amount_fen, "share_code": share_code, "coupon_id": coupon_id}
    event = AuditEvent(entity=f"order:{order.id}", action="order.created", actor=principal.actor, data=data)
    if not store.orders.create(order, event):
        if coupon_id:
            catalog.release_coupon(tenant, principal.subject, coupon_id, order_id)
        raise Conflict("order id collision, try again", code="busy")
    count("OrdersPlaced")
    return order


def _coupon_discount(
    principal: Principal, coupon_id: str, items: list[tuple[str, str, int, int]], order_id: str
) -> int:
    from chalicelib.catalog import coupon_discount, eligible_amount

    store = get_store()
    template = store.coupons.get(principal.tenant, coupon_id)
    if template is None:
        raise NotFound("unknown coupon", code="unknown_coupon")
    eligible = eligible_amount(template, [(pid, qty * unit) for pid, _, qty, unit in items])
    # WeChat Pay needs at least 1 fen: a coupon never makes an order free.
    discount = min(coupon_discount(template, eligible, utcnow()), sum(qty * unit for _, _, qty, unit in items) - 1)
    if discount <= 0:
        raise BadRequest("this coupon does not apply to this order", code="coupon_not_applicable")
    catalog.redeem_coupon(principal.tenant, principal.subject, coupon_id, order_id, utcnow())
    return discount


def _own_order(principal: Principal, order_id: str) -> Order:
    order = get_store().orders.get(principal.tenant, order_id)
    if order is None or order.buyer != principal.subject:
        raise NotFound("order not found", code="unknown_order")
    return order


def get(principal: Principal, order_id: str) -> Order:
    return _own_order(principal, order_id)


def pay(principal: Principal, order_id: str) -> dict[str, str]:
    """WeChat Pay JSAPI parameters for `wx.requestPayment`."""
    order = _own_order(principal, order_id)
    if order.status is not OrderStatus.CREATED:
        raise Conflict(f"the order is {order.status.value}", code="not_payable")
    user = get_store().users.get(principal.tenant, principal.subject)
    if user is None:
        raise Unauthorized("the user of this token does not exist", code="unknown_user")
    description = (order.lines[0].name if len(order.lines) == 1 else f"{order.lines[0].name} 等{len(order.lines)}件")[
        :127
    ]
    prepay = get_pay(principal.tenant).jsapi_prepay(
        out_trade_no=order.id, description=description, amount_fen=order.amount_fen, payer_openid=user.openid
    )
    return prepay.js_params()


def payment_notification(tenant_hint: str | None, headers: Mapping[str, str], body: bytes | str) -> dict[str, str]:
    """A WeChat Pay notification: verified, decrypted, applied once however often it repeats."""
    from chalicelib.services import tenants

    tenant = tenants.resolve(tenant_hint)
    notice = get_pay(tenant.id).parse_notification(headers, body)
    if notice.is_refund:
        logger.info("refund notification", extra={"order": notice.out_trade_no, "state": notice.trade_state})
        return {"code": "SUCCESS"}
    if notice.trade_state != "SUCCESS":
        return {"code": "SUCCESS"}  # nothing to do for other states
    store = get_store()
    order = store.orders.get(tenant.id, notice.out_trade_no)
    if order is None:
        raise NotFound("unknown order", code="unknown_order")
    now = utcnow()
    data = {"transaction_id": notice.transaction_id, "amount_fen": notice.amount_fen, "event_id": notice.event_id}
    event = AuditEvent(entity=f"order:{order.id}", action="order.paid", actor="system:wechatpay", data=data)
    extra = {"paid_at": iso(now), "transaction_id": notice.transaction_id}
    paid = store.orders.transition(
        tenant.id, order.id, (OrderStatus.CREATED,), OrderStatus.PAID, when=now, event=event, extra=extra,
        amount_fen=notice.amount_fen,
    )  # fmt: skip
    if paid:
        count("OrdersPaid")
        return {"code": "SUCCESS"}
    current = store.orders.get(tenant.id, order.id)
    if current is not None and current.transaction_id == notice.transaction_id:
        return {"code": "SUCCESS"}  # a repeated notification
    logger.error("payment does not match the order", extra={"order": order.id, "amount": notice.amount_fen})
    raise Conflict("the payment does not match the order", code="payment_mismatch")


def sandbox_pay_success(principal: Principal, order_id: str) -> dict[str, Any]:
    """Sandbox only: WeChat Pay's twin sends its signed notification through the real handler."""
    from chalicelib.wechat.pay import SandboxWeChatPay

    order = _own_order(principal, order_id)
    client = get_pay(principal.tenant)
    if not isinstance(client, SandboxWeChatPay):
        raise NotFound("not available", code="not_found")
    user = get_store().users.get(principal.tenant, principal.subject)
    openid = user.openid if user else ""
    headers, body = client.notification_for(order.id, order.amount_fen, openid)
    payment_notification(principal.tenant, headers, body)
    return order_view(_own_order(principal, order_id))


def confirm_receipt(principal: Principal, order_id: str) -> Order:
    order = _own_order(principal, order_id)
    _move(order, "receive", OrderStatus.RECEIVED, principal.actor, {"received_at": iso(utcnow())})
    return _own_order(principal, order_id)


def cancel(principal: Principal, order_id: str) -> Order:
    order = _own_order(principal, order_id)
    _move(order, "cancel", OrderStatus.CANCELLED, principal.actor, {})
    if order.coupon:
        catalog.release_coupon(order.tenant, order.buyer, order.coupon, order.id, actor=principal.actor)
    return _own_order(principal, order_id)


def auto_receipt(now: datetime, days: int = 10, page: int = 100) -> dict[str, Any]:
    """Confirm receipt of orders paid more than `days` ago that the buyer never confirmed.

    Pages through the sparse open-orders index: memory stays flat however many orders wait,
    and running twice (or concurrently) receives each order once.
    """
    store = get_store()
    received = 0
    for tenant in store.tenants.all():
        while True:
            due = store.orders.paid_before(tenant.id, now - timedelta(days=days), page)
            moved = 0
            for order_id in due:
                order = store.orders.get(tenant.id, order_id)
                if order is not None and order.status is OrderStatus.PAID:
                    extra = {"received_at": iso(now), "auto": "true"}
                    event = AuditEvent(
                        entity=f"order:{order.id}", action="order.received", actor="system:auto_receipt", data=extra
                    )
                    fields = {"received_at": iso(now)}
                    if store.orders.transition(
                        tenant.id,
                        order.id,
                        (OrderStatus.PAID,),
                        OrderStatus.RECEIVED,
                        when=now,
                        event=event,
                        extra=fields,
                    ):
                        moved += 1
            received += moved
            if len(due) < page or moved == 0:
                break
    count("OrdersAutoReceived", received)
    return {"received": received, "days": days}


def _move(order: Order, transition: str, status: OrderStatus, actor: str, extra: dict[str, str]) -> None:
    expected = rules.TRANSITIONS[transition]
    if order.status not in expected:
        raise Conflict(f"the order is {order.status.value}", code=f"cannot_{transition}")
    event = AuditEvent(entity=f"order:{order.id}", action=f"order.{status.value}", actor=actor, data=extra)
    if not get_store().orders.transition(
        order.tenant, order.id, expected, status, when=utcnow(), event=event, extra=extra
    ):
        raise Conflict("the order changed meanwhile, try again", code="busy")


def refund(principal: Principal, order_id: str, amount_fen: int, reason: str) -> dict[str, Any]:
    """An operator refunds part or all of a paid order through WeChat Pay; commission follows."""
    require_role(principal, Role.OWNER, Role.FINANCE)
    store = get_store()
    order = store.orders.get(principal.tenant, order_id)
    if order is None:
        raise NotFound("order not found", code="unknown_order")
    if order.status not in rules.TRANSITIONS["refund"]:
        raise Conflict(f"the order is {order.status.value}", code="not_refundable")
    if not 0 < amount_fen <= order.refundable_fen:
        raise BadRequest(f"the refund must be between 1 and {order.refundable_fen} fen", code="invalid_amount")
    # Deterministic refund number: a retry of the same refund is the same refund at WeChat.
    refund_id = f"{order.id}R{order.refunded_fen}"
    result = get_pay(principal.tenant).refund(
        out_trade_no=order.id, out_refund_no=refund_id, total_fen=order.amount_fen, refund_fen=amount_fen, reason=reason
    )
    data = {
        "refund_id": refund_id,
        "amount_fen": amount_fen,
        "refunded_before_fen": order.refunded_fen,
        "reason": reason,
    }
    event = AuditEvent(entity=f"order:{order.id}", action="order.refunded", actor=principal.actor, data=data)
    if not store.orders.add_refund(order, amount_fen, when=utcnow(), event=event):
        raise Conflict("the order changed meanwhile; nothing was recorded, retry", code="busy")
    count("Refunds")
    return {"refund_id": refund_id, "order_id": order.id, "amount_fen": amount_fen, "status": result.status}


def my_orders(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    page = get_store().orders.by_buyer(principal.tenant, principal.subject, cursor, limit)
    return {"items": page.items, "next_cursor": page.next_cursor}
