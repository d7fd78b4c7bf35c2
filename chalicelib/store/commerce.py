"""Plans, orders, the commission ledger, promoter accounts and sales counters."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page, StoredPlan
from chalicelib.ledger import BUCKETS, MAX_TX_ITEMS, LedgerLine, LedgerWrite, tx_items
from chalicelib.orders import Order, OrderStatus, PricedLine, Snapshot
from chalicelib.store import audit
from chalicelib.store.audit import canonical, version_actions
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor, unless_exists
from chalicelib.store.models import (
    AccountModel,
    AuditModel,
    LedgerModel,
    OrderModel,
    PlanModel,
    StatsModel,
    TenantModel,
)

# --- plans ----------------------------------------------------------------------------------


def _to_plan(item: PlanModel) -> StoredPlan:
    return StoredPlan(
        tenant=item.tenant,
        version=int(item.version),
        body=json.loads(item.body),
        created_at=parse_iso(item.created_at),
        created_by=item.created_by,
        activated_at=parse_iso(item.activated_at) if item.activated_at else None,
    )


class PlanStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, tenant: str, body: dict[str, Any], actor: str, when: datetime) -> StoredPlan | None:
        """Store the next version (immutable from then on); None if another writer took it."""
        latest = next(iter(PlanModel.query(tenant, scan_index_forward=False, limit=1, consistent_read=True)), None)
        version = int(latest.version) + 1 if latest else 1
        body = {**body, "version": version}
        item = PlanModel(tenant=tenant, version=version, body=canonical(body), created_at=iso(when), created_by=actor)
        event = AuditEvent(entity=f"plan:{version}", action="plan.created", actor=actor, data=body)
        record = audit.build(tenant, event, when, None)

        def write(tx: TransactWrite) -> None:
            tx.save(item, condition=PlanModel.version.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return _to_plan(item) if self._tx.run(write).committed else None

    def get(self, tenant: str, version: int) -> StoredPlan | None:
        try:
            return _to_plan(PlanModel.get(tenant, version, consistent_read=True))
        except PlanModel.DoesNotExist:
            return None

    def list(self, tenant: str, cursor: str | None, limit: int) -> Page[StoredPlan]:
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        result = PlanModel.query(tenant, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        return Page([_to_plan(i) for i in result], encode_cursor(result.last_evaluated_key))

    def activate(self, tenant: str, version: int, actor: str, when: datetime) -> bool:
        """Make `version` the tenant's active plan; False if that version does not exist."""
        event = AuditEvent(entity=f"plan:{version}", action="plan.activated", actor=actor, data={"version": version})
        record = audit.build(tenant, event, when, None)

        def write(tx: TransactWrite) -> None:
            tx.update(
                PlanModel(tenant, version),
                actions=[PlanModel.activated_at.set(PlanModel.activated_at | iso(when))],
                condition=PlanModel.version.exists(),
            )
            tx.update(
                TenantModel(tenant),
                actions=[TenantModel.active_plan.set(version)],
                condition=TenantModel.tenant.exists(),
            )
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(write).committed

    def active_version(self, tenant: str) -> int | None:
        try:
            item = TenantModel.get(tenant, consistent_read=True, attributes_to_get=["tenant", "active_plan"])
        except TenantModel.DoesNotExist:
            return None
        return int(item.active_plan) if item.active_plan is not None else None


# --- orders ---------------------------------------------------------------------------------


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


# --- ledger, accounts, stats ----------------------------------------------------------------


def _to_line(item: LedgerModel) -> LedgerLine:
    return LedgerLine(
        tenant=item.tenant,
        promoter=item.promoter,
        order_id=item.order_id,
        level=int(item.level),
        event=item.event,
        amount_fen=int(item.amount_fen),
        state=item.state,
        buyer=item.buyer,
        trace=json.loads(item.trace),
        created_at=parse_iso(item.created_at),
        frozen_until=parse_iso(item.frozen_until) if item.frozen_until else None,
    )


class LedgerStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self.transactions = 0  # counted for benchmarks

    def apply(self, tenant: str, write: LedgerWrite) -> bool:
        """Write everything in one transaction; False when a line exists already or a moved line
        is no longer in the state it was read in (a replay): nothing is written then."""
        if write.empty:
            return True
        if tx_items(write) > MAX_TX_ITEMS:
            raise ValueError("too many items for one transaction")

        def body(tx: TransactWrite) -> None:
            for line in write.new_lines:
                tx.save(_line_item(line), condition=LedgerModel.sk.does_not_exist())
            for line, state, until in write.moves:
                actions = _move_actions(tenant, state, until)
                tx.update(
                    LedgerModel(f"{tenant}#{line.promoter}", line.sk),
                    actions=actions,
                    condition=LedgerModel.state == line.state,
                )
            for promoter, deltas in write.accounts.items():
                tx.update(
                    AccountModel(f"{tenant}#{promoter}"),
                    actions=[getattr(AccountModel, b).add(d) for b, d in sorted(deltas.items())],
                )
            for (scope, period), counters in write.stats.items():
                tx.update(
                    StatsModel(f"{tenant}#{scope}", period),
                    actions=[getattr(StatsModel, c).add(d) for c, d in sorted(counters.items())],
                )

        self.transactions += 1
        outcome = self._tx.run(body)
        if not outcome.committed and outcome.conflict:
            raise RuntimeError("transaction conflict: retry the batch")
        return outcome.committed

    def lines_of_order(self, tenant: str, order_id: str, promoters: Iterable[str]) -> list[LedgerLine]:
        """Every line of an order (strongly consistent: queried per possible promoter)."""
        lines: list[LedgerLine] = []
        for promoter in dict.fromkeys(promoters):
            query = LedgerModel.query(
                f"{tenant}#{promoter}", LedgerModel.sk.startswith(f"{order_id}#"), consistent_read=True
            )
            lines += [_to_line(i) for i in query]
        return lines

    def due_lines(self, tenant: str, now: datetime, limit: int) -> list[LedgerLine]:
        """Frozen lines whose time has come, earliest first (one page, from the sparse index)."""
        query = LedgerModel.due.query(f"{tenant}#frozen", LedgerModel.frozen_until <= iso(now), limit=limit)
        return [
            LedgerLine(
                tenant=tenant,
                promoter=item.promoter,
                order_id=item.order_id,
                level=int(item.level),
                event=item.event,
                amount_fen=int(item.amount_fen),
                state=item.state,
                buyer="",
                trace={},
                created_at=now,
            )
            for item in query
        ]

    def account(self, tenant: str, promoter: str) -> dict[str, int]:
        try:
            item = AccountModel.get(f"{tenant}#{promoter}", consistent_read=True)
        except AccountModel.DoesNotExist:
            return dict.fromkeys(BUCKETS, 0)
        return {bucket: int(getattr(item, bucket) or 0) for bucket in BUCKETS}

    def lines(self, tenant: str, promoter: str, state: str | None, cursor: str | None, limit: int) -> Page[LedgerLine]:
        key = f"{tenant}#{promoter}"
        start = decode_cursor(cursor, hash_attr="pk", hash_value=key)
        condition = LedgerModel.state == state if state else None
        result = LedgerModel.query(
            key, filter_condition=condition, scan_index_forward=False, limit=limit, last_evaluated_key=start
        )
        return Page([_to_line(i) for i in result], encode_cursor(result.last_evaluated_key))

    def all_lines(self, tenant: str, promoter: str) -> list[LedgerLine]:
        return [_to_line(i) for i in LedgerModel.query(f"{tenant}#{promoter}", consistent_read=True)]

    def counters(self, tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """sales_fen of (scope, period) counters, strongly consistent."""
        wanted = list(dict.fromkeys(keys))
        found = {
            (i.pk.split("#", 1)[1], i.period): int(i.sales_fen or 0)
            for i in StatsModel.batch_get([(f"{tenant}#{s}", p) for s, p in wanted], consistent_read=True)
        }
        return {key: found.get(key, 0) for key in wanted}


def _move_actions(tenant: str, state: str, until: datetime | None) -> list[Any]:
    """A line's new state; frozen lines (only they) sit in the sparse `due` index."""
    actions: list[Any] = [LedgerModel.state.set(state)]
    if until is not None:
        actions.append(LedgerModel.frozen_until.set(iso(until)))
    if state == "frozen":
        actions.append(LedgerModel.frozen_key.set(f"{tenant}#frozen"))
    else:
        actions.append(LedgerModel.frozen_key.remove())
    return actions


def _line_item(line: LedgerLine) -> LedgerModel:
    return LedgerModel(
        pk=f"{line.tenant}#{line.promoter}",
        sk=line.sk,
        tenant=line.tenant,
        promoter=line.promoter,
        order_id=line.order_id,
        order_key=f"{line.tenant}#{line.order_id}",
        level=line.level,
        event=line.event,
        amount_fen=line.amount_fen,
        state=line.state,
        buyer=line.buyer,
        trace=canonical(dict(line.trace)),
        created_at=iso(line.created_at),
        frozen_until=iso(line.frozen_until) if line.frozen_until else None,
        frozen_key=f"{line.tenant}#frozen" if line.state == "frozen" and line.frozen_until else None,
    )
