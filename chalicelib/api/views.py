"""Response shapes: domain objects as the JSON the API answers (pure, no I/O).

The one home of how an order, a withdrawal, a refund, a plan, a product, a coupon, a commission
line, a team member or an audit record looks on the wire; services call these to answer, and the
OpenAPI document (`chalicelib.api.responses`) describes the same shapes.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib import catalog
from chalicelib.clock import iso
from chalicelib.entities import CouponClaim, CouponTemplate, Product, StoredPlan, TeamMember, User
from chalicelib.ledger import LedgerLine
from chalicelib.money import format_yuan
from chalicelib.orders import Order, Refund
from chalicelib.withdrawal import Withdrawal, WithdrawalState

# --- audit_trail


def audit_record_view(row: Any) -> dict[str, Any]:
    return {
        "entity": row.entity,
        "action": row.action,
        "actor": row.actor,
        "at": row.at,
        "data": json.loads(row.data),
        "hash": row.hash,
        "prev_hash": row.prev_hash,
        "id": row.sk,
    }


# --- catalog


def admin_product_view(product: Product) -> dict[str, Any]:
    """The product with its state; timestamps when known (lists come from an index without them)."""
    view = {**product_view(product), "active": product.active}
    if product.created_at is not None and product.updated_at is not None:
        view.update(created_at=iso(product.created_at), updated_at=iso(product.updated_at))
    return view


def coupon_claim_view(claim: CouponClaim, template: CouponTemplate) -> dict[str, Any]:
    return {
        "coupon_id": claim.coupon_id,
        "claim": claim.number,
        "state": claim.state.value,
        "claimed_at": iso(claim.claimed_at),
        "name": template.name,
        "threshold_fen": template.threshold_fen,
        "amount_fen": template.amount_fen,
        "valid_from": iso(template.valid_from),
        "valid_until": iso(template.valid_until),
        "product_ids": list(template.product_ids),
    }


def coupon_template_view(template: CouponTemplate) -> dict[str, Any]:
    return {
        "id": template.coupon_id,
        **catalog.template_fields(template),
        "issued": template.issued,
        "created_at": iso(template.created_at) if template.created_at else None,
    }


def product_view(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "name": product.name,
        "price_fen": product.price_fen,
        "repurchase_days": product.repurchase_days,
    }


# --- orders


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


# --- plans


def plan_view(stored: StoredPlan, active: int | None) -> dict[str, Any]:
    return {
        **stored.body,
        "version": stored.version,
        "active": stored.version == active,
        "created_at": iso(stored.created_at),
        "created_by": stored.created_by,
        "activated_at": iso(stored.activated_at) if stored.activated_at else None,
    }


# --- promoters


def commission_line_view(line: LedgerLine, names: dict[str, str]) -> dict[str, Any]:
    """A commission line as operators see it: the buyer named, the rule trace whole."""
    return {
        "promoter": {"id": line.promoter, "name": names.get(line.promoter, "")},
        "order_id": line.order_id,
        "level": line.level,
        "event": line.event,
        "amount_fen": line.amount_fen,
        "state": line.state,
        "buyer": {"id": line.buyer, "name": names.get(line.buyer, "")},
        "trace": dict(line.trace),
        "created_at": iso(line.created_at),
        "frozen_until": iso(line.frozen_until) if line.frozen_until else None,
    }


# --- refunds


def refund_view(order: Order, refund: Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.number,
        "order_id": order.id,
        "amount_fen": refund.amount_fen,
        "state": refund.state.value,
        "reason": refund.reason,
        "requested_at": iso(refund.requested_at),
        "late_payment": refund.late_payment,
    }


def admin_refund_view(refund: Refund) -> dict[str, Any]:
    """A refund on the console's order page: who asked for it, and why."""
    return {
        "refund_id": refund.number,
        "amount_fen": refund.amount_fen,
        "state": refund.state.value,
        "reason": refund.reason,
        "requested_at": iso(refund.requested_at),
        "actor": refund.actor,
    }


def admin_order_view(
    order: Order, lines: list[LedgerLine], names: dict[str, str], refundable_fen: int
) -> dict[str, Any]:
    """An order on the console's order page: buyer and upline by name, the attribution snapshot,
    its refunds and every commission line with its rule trace."""
    snap = order.snapshot
    return {
        **order_view(order),
        "buyer": {"id": order.buyer, "name": names.get(order.buyer, "")},
        "source": order.source,
        "attribution": {
            "upline": [{"id": uid, "name": names.get(uid, "")} for uid in snap.upline],
            "share_code": snap.share_code,
            "plan_version": snap.plan_version,
            "buyer_is_promoter": snap.buyer_is_promoter,
        },
        "refundable_fen": refundable_fen,
        "refunds": [admin_refund_view(r) for r in order.refunds],
        "commissions": [commission_line_view(x, names) for x in lines],
    }


# --- team


def member_view(member: TeamMember) -> dict[str, Any]:
    return {"id": member.id, "name": member.name, "bound_at": iso(member.bound_at)}


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "promoter": user.promoter,
        "created_at": iso(user.created_at),
        "bound_at": iso(user.bound_at) if user.bound_at else None,
    }


# --- withdrawals


def admin_withdrawal_view(w: Withdrawal) -> dict[str, Any]:
    data = {**withdrawal_view(w), "promoter": w.promoter, "attempts": w.attempts, "bill_no": w.bill_no}
    if w.state is WithdrawalState.SENDING and (w.refusal or w.not_found):
        data["refusal"], data["not_found"] = w.refusal, w.not_found  # why it waits before the money returns
    return data


def withdrawal_view(w: Withdrawal) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": w.id,
        "state": w.state.value,
        "amount_fen": w.amount_fen,
        "fee_fen": w.fee_fen,
        "net_fen": w.net_fen,
        "amount": format_yuan(w.amount_fen),
        "created_at": iso(w.created_at),
        "updated_at": iso(w.updated_at),
    }
    for name in ("reason", "fail_reason", "provider_state", "run_id"):
        value = getattr(w, name)
        if value:
            data[name] = value
    if w.state is WithdrawalState.WAIT_USER_CONFIRM:
        data["confirmation_required"] = True
    return data
