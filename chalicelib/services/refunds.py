"""Refunds through WeChat Pay: requested → succeeded | failed.

* A refund is recorded on the order as `requested` (with its deterministic `out_refund_no`,
  `<order>R01`, `<order>R02`, ...) before WeChat Pay is asked, in one transaction with its audit
  record. A crash in between leaves a visible request that reconciliation finishes, never a
  refund WeChat made and we did not record. The commission is reversed from the request on.
* WeChat answers PROCESSING and finishes later by notification (REFUND.SUCCESS / ABNORMAL /
  CLOSED) or, if that is lost, by the reconciliation job's query. SUCCESS → `succeeded`;
  ABNORMAL / CLOSED → `failed`: the refunded amount is taken off the order again and the
  commission engine undoes its reversal (`order.refund_failed`), counted as `RefundsFailed`.
* A double-submitted request is the same refund: the number comes from the order as the
  operator's request read it, the write is conditional on the order's version, and a request
  that finds its number (or its Idempotency-Key) recorded returns that refund. Without a key,
  the same amount and reason from the same operator within a minute is taken as a double click.
* A payment that arrives for a cancelled order is refunded in full at once (`<order>RLATE`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib.api.views import refund_view
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import DomainError, InvalidInput, Missing, StateConflict, UpstreamError
from chalicelib.observability import count, logger
from chalicelib.orders import (
    MAX_REFUNDS,
    TRANSITIONS,
    Order,
    OrderStatus,
    Refund,
    RefundState,
    refund_number,
    refund_outcome,
)
from chalicelib.store import get_store
from chalicelib.wechat import get_pay

LATE_PAYMENT_REASON = "订单已取消，款项原路退回"
DOUBLE_SUBMIT_WINDOW = timedelta(seconds=60)


def request(
    principal: Principal, order_id: str, amount_fen: int, reason: str, key: str | None = None
) -> tuple[dict[str, Any], bool]:
    """An operator refunds part or all of a paid order; returns (the refund, created now)."""
    require_role(principal, Role.OWNER, Role.FINANCE)
    store = get_store()
    order = store.orders.get(principal.tenant, order_id)
    if order is None:
        raise Missing("order not found", code="unknown_order")
    known = _same_request(order, amount_fen, reason, principal.actor, key, utcnow())
    if known is not None:
        return refund_view(order, _ask_wechat(order, known)), False
    _check_refundable(order, amount_fen)
    number = refund_number(order.id, len(order.refunds) + 1)
    now = utcnow()
    refund = Refund(number, amount_fen, RefundState.REQUESTED, reason, now, actor=principal.actor, key=key)

    def decide(current: Order) -> tuple[tuple[Refund, ...], int, AuditEvent] | None:
        if current.refund(number) is not None or len(current.refunds) != len(order.refunds):
            return None  # recorded by a concurrent request (a double submit), or another refund came first
        if current.status not in TRANSITIONS["refund"] or amount_fen > current.refundable_fen:
            return None
        data = {
            "refund_id": number,
            "amount_fen": amount_fen,
            "refunded_before_fen": current.refunded_fen,
            "reason": reason,
            "state": RefundState.REQUESTED.value,
        }
        event = AuditEvent(entity=f"order:{order.id}", action="order.refunded", actor=principal.actor, data=data)
        return (*current.refunds, refund), amount_fen, event

    after = store.orders.set_refunds(order, decide, when=now)
    if after is None:
        current = store.orders.get(principal.tenant, order_id) or order
        existing = current.refund(number)
        if existing is None or existing.amount_fen != amount_fen:
            raise StateConflict("the order changed meanwhile; nothing was recorded, reload and retry", code="busy")
        return refund_view(current, _ask_wechat(current, existing)), False  # the same request, submitted twice
    count("Refunds")
    return refund_view(after, _ask_wechat(after, refund)), True


def _same_request(
    order: Order, amount_fen: int, reason: str, actor: str, key: str | None, now: datetime
) -> Refund | None:
    """The refund this request repeats: the one with its Idempotency-Key, or, without a key, the
    same amount and reason from the same operator within DOUBLE_SUBMIT_WINDOW (a double click)."""
    if key is not None:
        return next((r for r in order.refunds if r.key == key), None)
    return next(
        (
            r
            for r in reversed(order.refunds)
            if r.key is None
            and (r.amount_fen, r.reason, r.actor) == (amount_fen, reason, actor)
            and now - r.requested_at < DOUBLE_SUBMIT_WINDOW
        ),
        None,
    )


def _check_refundable(order: Order, amount_fen: int) -> None:
    if order.status not in TRANSITIONS["refund"]:
        raise StateConflict(f"the order is {order.status.value}", code="not_refundable")
    if not 0 < amount_fen <= order.refundable_fen:
        raise InvalidInput(f"the refund must be between 1 and {order.refundable_fen} fen", code="invalid_amount")
    if len(order.refunds) >= MAX_REFUNDS:
        raise StateConflict(f"an order takes at most {MAX_REFUNDS} refunds", code="too_many_refunds")


def _ask_wechat(order: Order, refund: Refund) -> Refund:
    """Ask WeChat Pay for a requested refund (again: the same out_refund_no is the same refund)."""
    if refund.state is not RefundState.REQUESTED:
        return refund
    try:
        result = get_pay(order.tenant).refund(
            out_trade_no=order.id,
            out_refund_no=refund.number,
            total_fen=order.amount_fen,
            refund_fen=refund.amount_fen,
            reason=refund.reason[:80],
        )
    except UpstreamError as exc:
        if exc.code == "wechatpay_unavailable":
            logger.warning("refund left requested: WeChat Pay unreachable", extra={"refund": refund.number})
            return refund  # reconciliation asks again
        _finish(order.tenant, order.id, refund.number, RefundState.FAILED, f"{exc.code}: {exc.message}")
        raise
    outcome = refund_outcome(result.status)
    if outcome is None:
        return refund
    after = _finish(order.tenant, order.id, refund.number, outcome, result.status)
    return (after.refund(refund.number) if after else None) or refund


def notified(tenant: str, order_id: str, number: str, status: str) -> None:
    """A REFUND.* notification (verified): finish the refund it names."""
    outcome = refund_outcome(status)
    if outcome is None:
        return
    order = get_store().orders.get(tenant, order_id)
    if order is None or order.refund(number) is None:
        count("RefundsUnknown")
        logger.error("notification of a refund we did not request", extra={"order": order_id, "refund": number})
        return
    _finish(tenant, order_id, number, outcome, status)


def _finish(tenant: str, order_id: str, number: str, outcome: RefundState, why: str) -> Order | None:
    """Move a requested refund to succeeded or failed (once; repeats change nothing). A failed
    refund gives the refunded amount back to the order, and the engine undoes its reversal."""

    def decide(current: Order) -> tuple[tuple[Refund, ...], int, AuditEvent] | None:
        refund = current.refund(number)
        if refund is None or refund.state is not RefundState.REQUESTED:
            return None
        done = Refund(
            refund.number, refund.amount_fen, outcome, refund.reason, refund.requested_at, refund.actor, refund.key,
            refund.late_payment,
        )  # fmt: skip
        refunds = tuple(done if r.number == number else r for r in current.refunds)
        action = "order.refund_succeeded" if outcome is RefundState.SUCCEEDED else "order.refund_failed"
        data = {
            "refund_id": number,
            "amount_fen": refund.amount_fen,
            "refunded_before_fen": current.refunded_fen,
            "wechat_status": why,
        }
        event = AuditEvent(entity=f"order:{order_id}", action=action, actor="system:wechatpay", data=data)
        delta = -refund.amount_fen if outcome is RefundState.FAILED and not refund.late_payment else 0
        return refunds, delta, event

    store = get_store()
    order = store.orders.get(tenant, order_id)
    if order is None:
        return None
    after = store.orders.set_refunds(order, decide, when=utcnow())
    if after is not None and outcome is RefundState.FAILED:
        count("RefundsFailed")
        logger.error("refund failed at WeChat Pay", extra={"order": order_id, "refund": number, "status": why})
    elif after is not None:
        count("RefundsSucceeded")
        done = after.refund(number)
        count("RefundsSucceededFen", done.amount_fen if done else 0)
    return after


def refund_late_payment(order: Order, transaction_id: str, amount_fen: int) -> Order:
    """A payment arrived for an order cancelled meanwhile: it is never kept, but refunded in full."""
    number = f"{order.id}RLATE"
    now = utcnow()
    if order.refund(number) is None:
        refund = Refund(number, amount_fen, RefundState.REQUESTED, LATE_PAYMENT_REASON, now, "system:wechatpay",
                        late_payment=True)  # fmt: skip

        def decide(current: Order) -> tuple[tuple[Refund, ...], int, AuditEvent] | None:
            if current.refund(number) is not None or current.status is not OrderStatus.CANCELLED:
                return None
            data = {"refund_id": number, "amount_fen": amount_fen, "transaction_id": transaction_id}
            event = AuditEvent(
                entity=f"order:{order.id}", action="order.late_payment_refunded", actor="system:wechatpay", data=data
            )
            return (*current.refunds, refund), 0, event

        get_store().orders.set_refunds(order, decide, when=now)
        count("LatePaymentsRefunded")
        logger.warning("payment for a cancelled order: refunded", extra={"order": order.id})
    current = get_store().orders.get(order.tenant, order.id) or order
    late = current.refund(number)
    if late is not None and late.state is RefundState.REQUESTED:
        try:
            _ask_wechat(current, late)
        except DomainError:
            logger.exception("late payment refund refused", extra={"order": order.id})
    return get_store().orders.get(order.tenant, order.id) or current


def reconcile(order: Order, now: datetime) -> int:
    """Finish an order's requested refunds from WeChat's answer (lost notifications, outages);
    a refund WeChat never got is asked for again under the same number. Returns refunds finished."""
    finished = 0
    for refund in order.refunds:
        if refund.state is not RefundState.REQUESTED:
            continue
        try:
            known = get_pay(order.tenant).query_refund(refund.number)
        except UpstreamError:
            continue  # next run
        if known is None:
            try:
                _ask_wechat(order, refund)
            except DomainError:
                logger.exception("refund refused on reconciliation", extra={"refund": refund.number})
            continue
        outcome = refund_outcome(known.status)
        if outcome is not None and _finish(order.tenant, order.id, refund.number, outcome, known.status):
            finished += 1
    return finished
