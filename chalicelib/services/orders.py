"""Orders from the mini-program: place, pay (WeChat Pay JSAPI), receive, cancel, refund."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.api.views import order_view
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal
from chalicelib.errors import DomainError, InvalidInput, Missing, NotAuthenticated, StateConflict, UpstreamError
from chalicelib.observability import count, logger
from chalicelib.orders import TRANSITIONS, Order, OrderStatus, Snapshot, price
from chalicelib.services import catalog, refunds, shares, tenants
from chalicelib.settings import get_settings
from chalicelib.store import get_store
from chalicelib.wechat import get_pay

MAX_LINES = 50
MAX_QTY = 999


def new_order_id() -> str:
    """Time-sortable, 21 characters: a valid WeChat out_trade_no (6-32 alphanumerics)."""
    return "o" + utcnow().strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


def _priced_items(tenant: str, lines: Sequence[tuple[str, int]]) -> list[tuple[str, str, int, int]]:
    if not 1 <= len(lines) <= MAX_LINES:
        raise InvalidInput(f"an order has 1 to {MAX_LINES} lines", code="invalid_lines")
    wanted = [pid for pid, _ in lines]
    if len(set(wanted)) != len(wanted):
        raise InvalidInput("each product may appear once; use qty", code="invalid_lines")
    catalog = get_store().products.get_many(tenant, wanted)
    items = []
    for product_id, qty in lines:
        product = catalog.get(product_id)
        if product is None or not product.active:
            raise Missing(f"product {product_id} is not for sale", code="unknown_product")
        if not 1 <= qty <= MAX_QTY:
            raise InvalidInput(f"qty must be between 1 and {MAX_QTY}", code="invalid_qty")
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
        raise NotAuthenticated("the user of this token does not exist", code="unknown_user")
    if share_code is not None:
        shares.get(tenant, share_code)  # an unknown code is a 404, never a silent attribution
    items = _priced_items(tenant, lines)
    order_id = new_order_id()
    discount = _coupon_discount(principal, coupon_id, items, order_id) if coupon_id else 0
    order = Order(
        tenant=tenant,
        id=order_id,
        buyer=buyer.id,
        lines=price(items, discount),
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
        raise StateConflict("order id collision, try again", code="busy")
    count("OrdersPlaced")
    return order


def _coupon_discount(
    principal: Principal, coupon_id: str, items: list[tuple[str, str, int, int]], order_id: str
) -> int:
    """What the coupon takes off (`catalog.quote_coupon`: held, valid, threshold met), never the
    whole order (WeChat Pay needs at least 1 fen); the claim is used by this order."""
    now = utcnow()
    lines = [(pid, qty * unit) for pid, _, qty, unit in items]
    _, quoted = catalog.quote_coupon(principal.tenant, principal.subject, coupon_id, lines, now)
    discount = min(quoted, sum(amount for _, amount in lines) - 1)
    if discount <= 0:
        raise StateConflict("the coupon does not apply to this order", code="coupon_not_applicable")
    catalog.redeem_coupon(principal.tenant, principal.subject, coupon_id, order_id, now)
    return discount


def _own_order(principal: Principal, order_id: str) -> Order:
    order = get_store().orders.get(principal.tenant, order_id)
    if order is None or order.buyer != principal.subject:
        raise Missing("order not found", code="unknown_order")
    return order


def get(principal: Principal, order_id: str) -> Order:
    return _own_order(principal, order_id)


def pay(principal: Principal, order_id: str) -> dict[str, str]:
    """WeChat Pay JSAPI parameters for `wx.requestPayment`. The order is payable at WeChat until
    `time_expire` (the pay window after it was placed) unless it is cancelled (closed) first."""
    order = _own_order(principal, order_id)
    if order.status is not OrderStatus.CREATED:
        raise StateConflict(f"the order is {order.status.value}", code="not_payable")
    user = get_store().users.get(principal.tenant, principal.subject)
    if user is None:
        raise NotAuthenticated("the user of this token does not exist", code="unknown_user")
    description = (order.lines[0].name if len(order.lines) == 1 else f"{order.lines[0].name} 等{len(order.lines)}件")[
        :127
    ]
    expires = order.placed_at + timedelta(minutes=get_settings().pay_window_minutes)
    if utcnow() >= expires:
        raise StateConflict("the time to pay this order has passed; place it again", code="payment_expired")
    prepay = get_pay(principal.tenant).jsapi_prepay(
        out_trade_no=order.id,
        description=description,
        amount_fen=order.amount_fen,
        payer_openid=user.openid,
        time_expire=expires,
    )
    if order.prepaid_at is None:
        now = utcnow()
        data = {"pay_expires_at": iso(expires)}
        event = AuditEvent(entity=f"order:{order.id}", action="order.prepaid", actor=principal.actor, data=data)
        get_store().orders.prepaid(order, when=now, expires_at=expires, event=event)
    return prepay.js_params()


def payment_notification(appid: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, str]:
    """A WeChat Pay notification at `/v1/callbacks/wechatpay/<appid>/payment`: verified with that
    tenant's merchant keys (the decrypted appid and mchid must be the tenant's), applied once
    however often it repeats. Refund notifications arrive here too."""
    tenant = tenants.get(appid)
    notice = get_pay(tenant.id).parse_notification(headers, body)
    if notice.is_refund:
        refunds.notified(tenant.id, notice.out_trade_no, notice.out_refund_no or "", notice.trade_state)
        return {"code": "SUCCESS"}
    if notice.trade_state != "SUCCESS":
        return {"code": "SUCCESS"}  # nothing to do for other states
    paid(tenant.id, notice.out_trade_no, notice.transaction_id, notice.amount_fen, notice.success_time, "callback")
    return {"code": "SUCCESS"}


def paid(
    tenant: str, order_id: str, transaction_id: str, amount_fen: int, success_time: str | None, source: str
) -> Order:
    """WeChat says the order is paid (its notification, or a query): record it once. `paid_at` is
    WeChat's success_time. A payment for an order cancelled meanwhile is refunded at once."""
    store = get_store()
    order = store.orders.get(tenant, order_id)
    if order is None:
        raise Missing("unknown order", code="unknown_order")
    if order.transaction_id == transaction_id:
        return order  # a repeated notification
    if order.status is OrderStatus.CANCELLED:
        return refunds.refund_late_payment(order, transaction_id, amount_fen)
    when = _wechat_time(success_time)
    data = {"transaction_id": transaction_id, "amount_fen": amount_fen, "source": source, "paid_at": iso(when)}
    event = AuditEvent(entity=f"order:{order.id}", action="order.paid", actor="system:wechatpay", data=data)
    extra = {"paid_at": iso(when), "transaction_id": transaction_id}
    moved = store.orders.transition(
        tenant, order.id, (OrderStatus.CREATED,), OrderStatus.PAID, when=utcnow(), event=event, extra=extra,
        amount_fen=amount_fen, read=order,
    )  # fmt: skip
    if moved:
        count("OrdersPaid")
        count("OrdersPaidFen", amount_fen)
        return replace(order, status=OrderStatus.PAID, paid_at=when, transaction_id=transaction_id)
    current = store.orders.get(tenant, order.id) or order
    if current.transaction_id == transaction_id:
        return current  # a concurrent repeat won
    if current.status is OrderStatus.CANCELLED:
        return refunds.refund_late_payment(current, transaction_id, amount_fen)
    count("PaymentMismatches")
    logger.error("payment does not match the order", extra={"order": order.id, "amount": amount_fen})
    raise StateConflict("the payment does not match the order", code="payment_mismatch")


def _wechat_time(value: str | None) -> datetime:
    """A WeChat time (RFC 3339, China time) in UTC; now when WeChat gave none."""
    if not value:
        return utcnow()
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return utcnow()


def sandbox_pay_success(principal: Principal, order_id: str) -> dict[str, Any]:
    """Sandbox only: the buyer pays in WeChat. The WeChat Pay twin marks the order paid on its side
    and POSTs its signed notification to the notify_url it was given (never calling a handler)."""
    # function-local: cold start (the sandbox twin, with sqlite3, never loads in production)
    from chalicelib.wechat.pay.sandbox import SandboxWeChatPay

    order = _own_order(principal, order_id)
    client = get_pay(principal.tenant)
    if not isinstance(client, SandboxWeChatPay):
        raise Missing("not available", code="not_found")
    if order.prepaid_at is None and order.status is OrderStatus.CREATED:
        pay(principal, order_id)  # the buyer opened the payment sheet first
    client.user_pays(order.id)
    return order_view(_own_order(principal, order_id))


def confirm_receipt(principal: Principal, order_id: str) -> Order:
    order = _own_order(principal, order_id)
    _move(order, "receive", OrderStatus.RECEIVED, principal.actor, {"received_at": iso(utcnow())})
    return _own_order(principal, order_id)


def cancel(principal: Principal, order_id: str) -> Order:
    """Cancel an unpaid order. It is closed at WeChat Pay first, so it can no longer be paid; if
    WeChat says it was paid meanwhile, the payment is applied and the cancel refused. If WeChat
    cannot be reached, the order is cancelled anyway: a payment that still arrives is refunded."""
    order = _own_order(principal, order_id)
    if order.status is OrderStatus.CREATED and order.prepaid_at is not None:
        _close_at_wechat(order)
    _move(order, "cancel", OrderStatus.CANCELLED, principal.actor, {})
    if order.coupon:
        catalog.release_coupon(order.tenant, order.buyer, order.coupon, order.id, actor=principal.actor)
    return _own_order(principal, order_id)


def _close_at_wechat(order: Order) -> None:
    client = get_pay(order.tenant)
    try:
        client.close(order.id)
    except StateConflict as exc:
        if exc.code != "order_paid":
            raise
        state = client.query(order.id)
        if state is not None and state.transaction_id and state.amount_fen is not None:
            paid(order.tenant, order.id, state.transaction_id, state.amount_fen, state.success_time, "query")
        raise StateConflict("the order was paid meanwhile", code="order_paid") from exc
    except UpstreamError:
        count("PaymentCloseFailures")
        logger.warning("could not close the order at WeChat Pay; a late payment is refunded", extra={"order": order.id})


def auto_receipt(
    now: datetime, days: int = 10, page: int = 100, *, tenant: str | None = None, actor: str = "system:auto_receipt"
) -> dict[str, Any]:
    """Confirm receipt of orders paid more than `days` ago that the buyer never confirmed.

    Pages through the sparse open-orders index: memory stays flat however many orders wait,
    and running twice (or concurrently) receives each order once.
    """
    store = get_store()
    received = 0
    for tenant_id in [tenant] if tenant else [t.id for t in store.tenants.all()]:
        while True:
            due = store.orders.paid_before(tenant_id, now - timedelta(days=days), page)
            moved = 0
            for order_id in due:
                order = store.orders.get(tenant_id, order_id)
                if order is not None and order.status is OrderStatus.PAID:
                    extra = {"received_at": iso(now), "auto": "true"}
                    event = AuditEvent(entity=f"order:{order.id}", action="order.received", actor=actor, data=extra)
                    fields = {"received_at": iso(now)}
                    if store.orders.transition(
                        tenant_id,
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
    expected = TRANSITIONS[transition]
    if order.status not in expected:
        raise StateConflict(f"the order is {order.status.value}", code=f"cannot_{transition}")
    event = AuditEvent(entity=f"order:{order.id}", action=f"order.{status.value}", actor=actor, data=extra)
    if not get_store().orders.transition(
        order.tenant, order.id, expected, status, when=utcnow(), event=event, extra=extra
    ):
        raise StateConflict("the order changed meanwhile, try again", code="busy")


def my_orders(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    page = get_store().orders.by_buyer(principal.tenant, principal.subject, cursor, limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


# --- payment reconciliation ------------------------------------------------------------------

RECONCILE_AFTER = timedelta(minutes=5)  # give WeChat's notification time to arrive first
RECONCILE_MAX = 500  # orders asked about per tenant and run; the rest wait for the next run
RECONCILE_ACTOR = "system:reconcile_payments"


def reconcile_payments(now: datetime, tenant: str | None = None) -> dict[str, Any]:
    """Ask WeChat Pay about orders still waiting for it (lost notifications, outages, a wrong
    notify URL) and apply what it says, oldest first: paid → paid; closed or failed → cancelled;
    unpaid past `time_expire` → closed at WeChat and cancelled; refunds in progress → finished."""
    store = get_store()
    tally = {"checked": 0, "paid": 0, "cancelled": 0, "refunds_finished": 0, "errors": 0}
    tenant_ids = [tenant] if tenant else [t.id for t in store.tenants.all()]
    for tenant_id in tenant_ids:
        for order_id in store.orders.pending_at_wechat(tenant_id, now - RECONCILE_AFTER, RECONCILE_MAX):
            order = store.orders.get(tenant_id, order_id)
            if order is None:
                continue
            tally["checked"] += 1
            try:
                outcome = _reconcile_order(order, now)
            except DomainError as exc:
                count("PaymentReconciliationErrors")
                logger.warning("payment reconciliation failed", extra={"order": order_id, "code": exc.code})
                tally["errors"] += 1
                continue
            if outcome:
                tally[outcome] += 1
            tally["refunds_finished"] += refunds.reconcile(store.orders.get(tenant_id, order_id) or order, now)
    if tally["paid"]:
        count("PaymentsRecoveredByReconciliation", tally["paid"])
    logger.info("payments reconciled", extra=tally)
    return tally


def _reconcile_order(order: Order, now: datetime) -> str | None:
    """One order waiting for its payment: 'paid', 'cancelled', or None (still waiting / not unpaid)."""
    if order.status is not OrderStatus.CREATED:
        return None
    client = get_pay(order.tenant)
    state = client.query(order.id)
    if state is not None and state.trade_state in ("SUCCESS", "REFUND") and state.transaction_id:
        paid(order.tenant, order.id, state.transaction_id, state.amount_fen or 0, state.success_time, "reconcile")
        return "paid"
    finished_at_wechat = state is not None and state.trade_state in ("CLOSED", "REVOKED", "PAYERROR")
    expired = order.pay_expires_at is not None and now >= order.pay_expires_at
    if not (finished_at_wechat or expired):
        return None
    if state is not None and not finished_at_wechat:
        client.close(order.id)  # StateConflict order_paid: a payment raced the expiry; next run applies it
    reason = f"payment {state.trade_state.lower()} at WeChat Pay" if state and finished_at_wechat else "payment expired"
    event = AuditEvent(
        entity=f"order:{order.id}", action="order.cancelled", actor=RECONCILE_ACTOR, data={"reason": reason}
    )
    if get_store().orders.transition(
        order.tenant, order.id, (OrderStatus.CREATED,), OrderStatus.CANCELLED, when=now, event=event
    ):
        if order.coupon:
            catalog.release_coupon(order.tenant, order.buyer, order.coupon, order.id, actor=RECONCILE_ACTOR)
        count("OrdersExpired")
        return "cancelled"
    return None


def refund(principal: Principal, order_id: str, amount_fen: int, reason: str, key: str | None = None) -> dict[str, Any]:
    """An operator refunds part or all of a paid order (see `services.refunds`)."""
    return refunds.request(principal, order_id, amount_fen, reason, key)[0]
