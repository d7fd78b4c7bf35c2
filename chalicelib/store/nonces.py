"""What the merchant API remembers for a while: request nonces and applied event ids.

One table (`nonces`), one item per thing remembered, deleted by DynamoDB's TTL some time after
`expires_at`. TTL deletion lags (up to days), so an item whose `expires_at` has passed counts
as forgotten: every "remember" is a put on the condition that the key is absent *or expired*.

- `tenant#merchant#nonce`: a request's nonce, kept a little longer than a signed request stays
  valid, so the same request cannot be played twice.
- `tenant#merchant#event#<event id>`: an event that changed an order, written in the same
  transaction as that change, so an event is applied once however often it is delivered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent
from chalicelib.orders import Order
from chalicelib.retry import Retry
from chalicelib.store.base import Transactions, conditional_write
from chalicelib.store.models import NonceModel
from chalicelib.store.orders import Change, ExtraWriteRefused, OrderStore, refund_update


class RefundOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this event id was applied already
    ORDER_CHANGED = "order_changed"  # the order is no longer as read: nothing was written


def nonce_key(tenant: str, merchant: str, nonce: str) -> str:
    """A merchant's nonces are remembered across every tenant: the appid header is not signed,
    so a captured request must not be replayable against another mini-program either."""
    return f"*#{merchant}#{nonce}"


def event_key(tenant: str, merchant: str, event_id: str) -> str:
    """Cannot meet a nonce key: nonces never contain '#'."""
    return f"{tenant}#{merchant}#event#{event_id}"


def _forgotten(now: datetime) -> Condition:
    """Absent, or expired but not yet deleted by TTL."""
    condition: Condition = NonceModel.pk.does_not_exist() | (NonceModel.expires_at < now)
    return condition


class NonceStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def remember(self, tenant: str, merchant: str, nonce: str, ttl_seconds: int) -> bool:
        """Remember a nonce for `ttl_seconds`; False when it is remembered already (a replay)."""
        now = utcnow()
        item = NonceModel(pk=nonce_key(tenant, merchant, nonce), expires_at=now + timedelta(seconds=ttl_seconds))
        return conditional_write(lambda: item.save(condition=_forgotten(now)))

    def hit(self, key: str, window_ends: datetime) -> int:
        """Count one attempt against a throttle key for the window ending at `window_ends`."""
        item = NonceModel(pk=f"throttle#{key}")
        item.update(actions=[NonceModel.hits.add(1), NonceModel.expires_at.set(window_ends)])
        return int(item.hits or 0)

    def hits(self, key: str) -> int:
        """Attempts counted against a throttle key in its current window (0 once it expired)."""
        try:
            item = NonceModel.get(f"throttle#{key}", consistent_read=True)
        except NonceModel.DoesNotExist:
            return 0
        return int(item.hits or 0) if item.expires_at > utcnow() else 0

    def applied_to(self, tenant: str, merchant: str, event_id: str) -> str | None:
        """The order an event was applied to; None if it was not (or is forgotten)."""
        try:
            item = NonceModel.get(event_key(tenant, merchant, event_id), consistent_read=True)
        except NonceModel.DoesNotExist:
            return None
        return None if item.expires_at < utcnow() else item.ref

    def refund_once(
        self,
        order: Order,
        merchant: str,
        event_id: str,
        refund_fen: int,
        *,
        when: datetime,
        event: AuditEvent,
        ttl_seconds: int,
    ) -> RefundOutcome:
        """Add a refund to the order and remember the event id, both or neither.

        The order must still be as read (status, amount, refunded_fen), so the event data's
        `refunded_before_fen` is exact. The order update is `orders.refund_update`, as in `OrderStore.add_refund`.
        """
        marker = NonceModel(
            pk=event_key(order.tenant, merchant, event_id),
            expires_at=when + timedelta(seconds=ttl_seconds),
            ref=order.id,
        )

        def change(current: Order) -> Change:
            if current.version_tag != order.version_tag:
                return None  # not as read: `refunded_before_fen` would be wrong
            actions, unchanged = refund_update(current, refund_fen, event=event, when=when, exact=True)
            return actions, unchanged, event

        def remember(tx: TransactWrite) -> None:
            tx.save(marker, condition=_forgotten(when))  # item 0: puts go before updates

        try:
            applied = OrderStore(self._tx).versioned(
                order.tenant, order.id, change, when=when, extra_writes=remember, retry=Retry.at_once(1)
            )
        except ExtraWriteRefused:
            return RefundOutcome.DUPLICATE
        return RefundOutcome.APPLIED if applied else RefundOutcome.ORDER_CHANGED
