"""Orders: pricing and the order state machine. Pure, no I/O.

An order is priced on the server from the catalog (the client never sends an amount); a
discount is spread over the lines in proportion to their list amounts, rounded down, the
remainder going to the largest lines, so the lines always add up to exactly what was paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class OrderStatus(StrEnum):
    CREATED = "created"  # placed, waiting for payment
    PAID = "paid"
    RECEIVED = "received"  # the buyer confirmed receipt (or auto-receipt did)
    CANCELLED = "cancelled"  # before payment only


# Which status a transition needs (refunds keep the status and raise refunded_fen).
TRANSITIONS: dict[str, tuple[OrderStatus, ...]] = {
    "pay": (OrderStatus.CREATED,),
    "receive": (OrderStatus.PAID,),
    "cancel": (OrderStatus.CREATED,),
    "refund": (OrderStatus.PAID, OrderStatus.RECEIVED),
}


class RefundState(StrEnum):
    """A refund is recorded as requested before WeChat Pay is asked, then finishes one way."""

    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # its commission reversal is undone


@dataclass(frozen=True, slots=True)
class Refund:
    number: str  # out_refund_no: deterministic, so a retry is the same refund at WeChat
    amount_fen: int
    state: RefundState
    reason: str
    requested_at: datetime
    actor: str = ""
    key: str | None = None  # the operator's Idempotency-Key
    late_payment: bool = False  # the refund of a payment that arrived for a cancelled order


MAX_REFUNDS = 50


def refund_number(order_id: str, sequence: int) -> str:
    """The out_refund_no of an order's `sequence`-th refund (1-based): `<order>R01`."""
    return f"{order_id}R{sequence:02d}"


def refund_outcome(wechat_status: str) -> RefundState | None:
    """What WeChat's refund status means for our refund; None while it is still processing."""
    if wechat_status == "SUCCESS":
        return RefundState.SUCCEEDED
    if wechat_status in ("ABNORMAL", "CLOSED"):
        return RefundState.FAILED
    return None


@dataclass(frozen=True, slots=True)
class PricedLine:
    product_id: str
    name: str
    qty: int
    unit_price_fen: int
    paid_fen: int

    @property
    def list_fen(self) -> int:
        return self.unit_price_fen * self.qty


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The attribution frozen when the order is placed: who earns, under which plan version."""

    upline: tuple[str, ...]
    share_code: str | None = None
    plan_version: int | None = None
    buyer_is_promoter: bool = True


@dataclass(frozen=True, slots=True)
class Order:
    tenant: str
    id: str
    buyer: str
    lines: tuple[PricedLine, ...]
    status: OrderStatus
    snapshot: Snapshot
    placed_at: datetime
    version: int = 0  # the stored version (every change is the next one)
    audit_hash: str | None = None  # the head of its audit chain
    discount_fen: int = 0
    coupon: str | None = None
    refunded_fen: int = 0
    paid_at: datetime | None = None
    received_at: datetime | None = None
    transaction_id: str | None = None
    source: str = "miniprogram"
    refunds: tuple[Refund, ...] = field(default=())
    prepaid_at: datetime | None = None
    pay_expires_at: datetime | None = None
    pending_since: datetime | None = None  # waiting for WeChat Pay (payment or a refund) since

    @property
    def version_tag(self) -> tuple[int, int, OrderStatus]:
        """What an exact refund checks is unchanged since it was read."""
        return (self.amount_fen, self.refunded_fen, self.status)

    def refund(self, number: str) -> Refund | None:
        return next((r for r in self.refunds if r.number == number), None)

    @property
    def list_fen(self) -> int:
        return sum(line.list_fen for line in self.lines)

    @property
    def amount_fen(self) -> int:
        """What the buyer pays: the lines after the discount."""
        return sum(line.paid_fen for line in self.lines)

    @property
    def refundable_fen(self) -> int:
        return self.amount_fen - self.refunded_fen


def price(items: Sequence[tuple[str, str, int, int]], discount_fen: int) -> tuple[PricedLine, ...]:
    """Lines of (product_id, name, qty, unit_price_fen) with `discount_fen` spread over them.

    Each line's share is rounded down and the fen left over go one by one to the lines with
    the largest list amounts, so the paid amounts add up to exactly list - discount.
    """
    if any(qty <= 0 or unit < 0 for _, _, qty, unit in items):
        raise ValueError("quantities must be positive and prices not negative")
    total = sum(qty * unit for _, _, qty, unit in items)
    if not 0 <= discount_fen <= total:
        raise ValueError("the discount must be between 0 and the order's list amount")
    shares = [discount_fen * qty * unit // total if total else 0 for _, _, qty, unit in items]
    left = discount_fen - sum(shares)
    order = sorted(range(len(items)), key=lambda i: (-items[i][2] * items[i][3], i))
    for i in order[:left]:
        shares[i] += 1
    return tuple(
        PricedLine(pid, name, qty, unit, qty * unit - share)
        for (pid, name, qty, unit), share in zip(items, shares, strict=True)
    )
