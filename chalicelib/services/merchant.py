"""Orders from other systems: shops and brands with their own checkout tell us, server to server,
that an order was paid, received or refunded; commission follows as for mini-program orders.

Each event is applied once however often it is delivered:
- Our id of a merchant order is derived from (tenant, merchant, the merchant's order id), so
  one merchant order is one item. `paid` creates it if absent (a conditional put), then moves
  it CREATED → PAID; `received` moves it PAID → RECEIVED. Each step is a conditional write on
  the status, and an event that finds the order past its step is a duplicate. A crash between
  create and pay leaves a CREATED order that the next delivery pays.
- `refunded` adds the refund and remembers its event id in one transaction (`store.nonces`).
Every change is a new version of the order, audited by the orders stream with the actor
`merchant:<id>` and the event id in its data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib import signing
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, User
from chalicelib.errors import InvalidInput, Missing, NotAllowed, NotAuthenticated, StateConflict
from chalicelib.observability import count, logger
from chalicelib.orders import TRANSITIONS, Order, OrderStatus, PricedLine, Snapshot
from chalicelib.retry import Retry
from chalicelib.services import logins, merchant_credentials, shares
from chalicelib.store import get_store

EVENT_TTL_SECONDS = 400 * 24 * 3600  # how long an applied refund event id is remembered
REFUND_REASON = "refunded by the merchant"
REFUNDS = Retry.at_once(5)  # optimistic: each attempt that loses a race re-reads the order


class EventType(StrEnum):
    PAID = "paid"
    RECEIVED = "received"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class MerchantLine:
    product_id: str
    qty: int
    paid_fen: int


@dataclass(frozen=True, slots=True)
class MerchantEvent:
    """One event as the merchant sent it (validated for shape by the API)."""

    event_id: str
    type: EventType
    order_id: str  # the merchant's own order id
    openid: str
    amount_fen: int | None  # paid: the order's amount; refunded: this refund's; received: optional check
    lines: tuple[MerchantLine, ...] = ()
    share_code: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """A merchant whose request was signed with one of its secrets, and the tenant it belongs to."""

    merchant: str
    nonce: str
    tenant: str

    @property
    def actor(self) -> str:
        return f"merchant:{self.merchant}"


def order_id_for(tenant: str, merchant: str, merchant_order_id: str) -> str:
    """Our id of a merchant's order: the same order always gets the same id (21 characters)."""
    return "m" + hashlib.sha256(f"{tenant}:{merchant}:{merchant_order_id}".encode()).hexdigest()[:20]


def authenticate(merchant: str, timestamp: str, nonce: str, signature: str, body: bytes, appid: str | None) -> Caller:
    """The merchant of a signed request and its tenant, or 401 (`bad_signature`, `stale_request`).

    The tenant is the one the merchant's credential belongs to; `X-Appid`, when sent, must name
    it (403 `merchant_tenant_mismatch`), checked only after the signature so that strangers learn
    nothing about which tenant a merchant id belongs to.
    """
    credential = get_store().merchants.get(merchant) if signing.valid_merchant_id(merchant) else None
    candidates: list[str | None] = [None]
    if credential is not None and not credential.disabled:
        candidates = [*merchant_credentials.secrets_of(credential)] or [None]
    now = utcnow().timestamp()
    refusal: signing.Refusal | None = signing.Refusal.BAD_SIGNATURE
    used = 0
    while used < len(candidates):
        refusal = signing.check(
            candidates[used],
            merchant=merchant,
            timestamp=timestamp,
            nonce=nonce,
            signature=signature,
            body=body,
            now=now,
        )
        if refusal is not signing.Refusal.BAD_SIGNATURE:
            break
        used += 1
    if refusal is not None or credential is None:
        count("MerchantRequestsRefused")
        refusal = refusal or signing.Refusal.BAD_SIGNATURE
        raise NotAuthenticated(refusal.message, code=refusal.code)
    if used > 0:
        count("MerchantPreviousSecretUsed")  # the merchant still signs with the secret before rotation
    if appid and appid != credential.tenant:
        count("MerchantRequestsRefused")
        raise NotAllowed(
            "this merchant belongs to another mini-program than X-Appid names", code="merchant_tenant_mismatch"
        )
    return Caller(merchant=merchant, nonce=nonce, tenant=credential.tenant)


def apply(caller: Caller, event: MerchantEvent) -> dict[str, Any]:
    """Apply one event once: `{"status": "applied" | "duplicate", "order_id", ...}`."""
    now = utcnow()
    occurred = _occurred(event, now)
    tenant = caller.tenant
    if not get_store().nonces.remember(tenant, caller.merchant, caller.nonce, signing.NONCE_TTL_SECONDS):
        count("MerchantReplays")
        raise NotAuthenticated(
            "this X-Nonce was used already; sign every request with a new one", code="replayed_nonce"
        )
    if event.type is EventType.PAID:
        applied, order = _paid(tenant, caller, event, occurred)
    elif event.type is EventType.RECEIVED:
        applied, order = _received(tenant, caller, event, occurred)
    else:
        applied, order = _refunded(tenant, caller, event)
    status = "applied" if applied else "duplicate"
    count("MerchantEventsApplied" if applied else "MerchantEventsDuplicate")
    logger.info(
        "merchant event",
        extra={"merchant": caller.merchant, "type": event.type.value, "event_id": event.event_id, "status": status},
    )
    return {
        "status": status,
        "order_id": order.id,
        "merchant_order_id": event.order_id,
        "order_status": order.status.value,
        "amount_fen": order.amount_fen,
        "refunded_fen": order.refunded_fen,
    }


def _occurred(event: MerchantEvent, now: datetime) -> datetime:
    """When it happened at the merchant: not after now (a little clock skew is forgiven), and not
    older than the return window, so a backdated receipt can never skip the freeze."""
    if event.occurred_at is None:
        return now
    if event.occurred_at > now + timedelta(seconds=signing.MAX_SKEW_SECONDS):
        raise InvalidInput("occurred_at is in the future", code="invalid_occurred_at")
    if event.occurred_at < now - MAX_BACKDATE:
        raise InvalidInput(
            f"occurred_at is more than {MAX_BACKDATE.days} days ago; send events as they happen",
            code="invalid_occurred_at",
        )
    return min(event.occurred_at, now)


# The return window (七天无理由退货): an event may arrive late, but never older than this.
MAX_BACKDATE = timedelta(days=7)


def _data(event: MerchantEvent, **extra: object) -> dict[str, object]:
    """What the order's new version records about the event (its audit record's data)."""
    return {"event_id": event.event_id, "merchant_order_id": event.order_id, **extra}


# --- paid and received ----------------------------------------------------------------------


def _paid(tenant: str, caller: Caller, event: MerchantEvent, paid_at: datetime) -> tuple[bool, Order]:
    store = get_store()
    order_id = order_id_for(tenant, caller.merchant, event.order_id)
    order = store.orders.get(tenant, order_id) or _create(tenant, caller, event, order_id)
    _check_same(order, event, event.amount_fen)
    if order.status is not OrderStatus.CREATED:
        return False, _past(order, OrderStatus.PAID, "not_payable")
    data = _data(event, amount_fen=order.amount_fen, paid_at=iso(paid_at))
    fields = {"paid_at": iso(paid_at), "transaction_id": event.order_id}  # the payment is the merchant's order
    return _advance(order, caller, TRANSITIONS["pay"], OrderStatus.PAID, fields, data)


def _received(tenant: str, caller: Caller, event: MerchantEvent, received_at: datetime) -> tuple[bool, Order]:
    order = _existing(tenant, caller, event)
    _check_same(order, event, event.amount_fen)
    if order.status is not OrderStatus.PAID:
        return False, _past(order, OrderStatus.RECEIVED, "cannot_receive")
    fields = {"received_at": iso(received_at)}
    return _advance(order, caller, TRANSITIONS["receive"], OrderStatus.RECEIVED, fields, _data(event, **fields))


_STEPS = (OrderStatus.CREATED, OrderStatus.PAID, OrderStatus.RECEIVED)  # the road of a merchant order


def _past(order: Order, step: OrderStatus, refusal: str) -> Order:
    """An order at or past `step` makes the event a duplicate; any other state refuses it."""
    if order.status in _STEPS and _STEPS.index(order.status) >= _STEPS.index(step):
        return order
    raise StateConflict(f"the order is {order.status.value}", code=refusal)


def _advance(
    order: Order,
    caller: Caller,
    expected: tuple[OrderStatus, ...],
    status: OrderStatus,
    fields: dict[str, str],
    data: dict[str, object],
) -> tuple[bool, Order]:
    store = get_store()
    event = AuditEvent(entity=f"order:{order.id}", action=f"order.{status.value}", actor=caller.actor, data=data)
    moved = store.orders.transition(
        order.tenant, order.id, expected, status, when=utcnow(), event=event, extra=fields, amount_fen=order.amount_fen
    )
    current = store.orders.get(order.tenant, order.id)
    if current is None:
        raise Missing("order not found", code="unknown_order")
    if moved:
        count("OrdersPaid" if status is OrderStatus.PAID else "OrdersReceived")
        if status is OrderStatus.PAID:
            count("OrdersPaidFen", order.amount_fen)
        return True, current
    return False, _past(current, status, "busy")  # another delivery moved it meanwhile


def _create(tenant: str, caller: Caller, event: MerchantEvent, order_id: str) -> Order:
    """The merchant's order, placed now with the buyer's attribution frozen (CREATED)."""
    store = get_store()
    if event.share_code is not None:
        shares.get(tenant, event.share_code)  # an unknown code is a 404, never a silent attribution
    if event.amount_fen is None:
        raise InvalidInput("amount_fen is required", code="invalid_body")
    buyer = _buyer(tenant, caller, event.openid)
    lines = _lines(caller.merchant, event.lines, event.amount_fen)
    order = Order(
        tenant=tenant,
        id=order_id,
        buyer=buyer.id,
        lines=lines,
        status=OrderStatus.CREATED,
        snapshot=Snapshot(
            upline=buyer.upline,
            share_code=event.share_code,
            plan_version=store.plans.active_version(tenant),
            buyer_is_promoter=buyer.promoter,
        ),
        placed_at=utcnow(),
        discount_fen=sum(x.list_fen for x in lines) - event.amount_fen,
        source=caller.actor,
    )
    data = _data(event, amount_fen=order.amount_fen, share_code=event.share_code)
    created = AuditEvent(entity=f"order:{order_id}", action="order.created", actor=caller.actor, data=data)
    if store.orders.create(order, created):
        count("MerchantOrders")
        return order
    existing = store.orders.get(tenant, order_id)  # another delivery of the same order created it
    if existing is None:
        raise StateConflict("the order changed meanwhile, try again", code="busy")
    return existing


def _lines(merchant: str, given: tuple[MerchantLine, ...], amount_fen: int) -> tuple[PricedLine, ...]:
    """The merchant's lines as paid; the unit price is the line's paid amount per unit, rounded up
    (the fen this adds show as the order's discount). No lines: one line for the whole amount."""
    lines = given or (MerchantLine(f"merchant:{merchant}", 1, amount_fen),)
    return tuple(PricedLine(x.product_id, x.product_id, x.qty, -(-x.paid_fen // x.qty), x.paid_fen) for x in lines)


def _buyer(tenant: str, caller: Caller, openid: str) -> User:
    """The user of this openid, created (as a login would) if they never opened the mini-program."""
    store = get_store()
    uid = logins.user_id_for(tenant, openid)
    user = store.users.get(tenant, uid)
    if user is not None:
        return user
    new = User(tenant=tenant, id=uid, openid=openid, name=f"微信用户{uid[-4:]}", created_at=utcnow())
    data = {"name": new.name, "via": caller.actor}
    store.users.create(new, AuditEvent(entity=f"user:{uid}", action="user.created", actor=caller.actor, data=data))
    return store.users.get(tenant, uid) or new


def _existing(tenant: str, caller: Caller, event: MerchantEvent) -> Order:
    order = get_store().orders.get(tenant, order_id_for(tenant, caller.merchant, event.order_id))
    if order is None:
        raise Missing("no paid event was received for this order_id", code="unknown_order")
    return order


def _check_same(order: Order, event: MerchantEvent, amount_fen: int | None) -> None:
    """An event about an order must name its buyer and, where it says it, its amount."""
    if order.buyer != logins.user_id_for(order.tenant, event.openid):
        raise StateConflict("this order_id belongs to another buyer", code="order_mismatch")
    if amount_fen is not None and amount_fen != order.amount_fen:
        raise StateConflict(f"this order was paid {order.amount_fen} fen, not {amount_fen}", code="order_mismatch")


# --- refunded -------------------------------------------------------------------------------


def _refunded(tenant: str, caller: Caller, event: MerchantEvent) -> tuple[bool, Order]:
    """Add the refund unless this event id was applied; the order's refund id is the event id."""
    # function-local: cold start (the nonce store loads PynamoDB; loaded by now anyway)
    from chalicelib.store.nonces import RefundOutcome  # the store is loaded by now

    store = get_store()
    order = _existing(tenant, caller, event)
    _check_same(order, event, None)
    amount = event.amount_fen or 0
    for _ in REFUNDS:
        applied_to = store.nonces.applied_to(tenant, caller.merchant, event.event_id)
        if applied_to == order.id:
            return False, order
        if applied_to is not None:
            raise StateConflict("this event_id was applied to another order", code="event_id_reused")
        if order.status not in TRANSITIONS["refund"]:
            raise StateConflict(f"the order is {order.status.value}", code="not_refundable")
        if not 0 < amount <= order.refundable_fen:
            raise InvalidInput(f"the refund must be between 1 and {order.refundable_fen} fen", code="invalid_amount")
        data = _data(
            event,
            refund_id=event.event_id,
            amount_fen=amount,
            refunded_before_fen=order.refunded_fen,
            reason=REFUND_REASON,
        )
        audit = AuditEvent(entity=f"order:{order.id}", action="order.refunded", actor=caller.actor, data=data)
        outcome = store.nonces.refund_once(
            order, caller.merchant, event.event_id, amount, when=utcnow(), event=audit, ttl_seconds=EVENT_TTL_SECONDS
        )
        order = _existing(tenant, caller, event)
        if outcome is RefundOutcome.APPLIED:
            count("Refunds")
            return True, order
        # a concurrent delivery or refund won: look again (duplicate, or refund the order as it is now)
    raise StateConflict("the order changed meanwhile; nothing was recorded, retry", code="busy")
