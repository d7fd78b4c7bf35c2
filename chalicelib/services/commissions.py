"""The commission engine (driven by the orders stream) and the promoter's views of it.

For each changed order the engine computes what the event means for commission
(`chalicelib.commission`, pure) and writes it to the ledger: new lines with a condition
that they do not exist yet (key order#level#event, so a replay writes nothing), line state
moves with a condition on the state they were read in, and ADD updates to accounts and
sales counters. On the fast path the whole batch's paid orders go in one transaction per
100 items with the account deltas added up per promoter, so a hot promoter gets one write
per batch; if that transaction is refused (a replayed order), each order is written in a
transaction of its own and the replayed ones are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import commission, settlement
from chalicelib.clock import iso, parse_iso, utcnow
from chalicelib.commission import Attribution, Earning, OrderLine, Plan, Trigger
from chalicelib.entities import Principal
from chalicelib.errors import BadRequest
from chalicelib.ledger import MAX_TX_ITEMS, LedgerLine, LedgerWrite, merge, tx_items
from chalicelib.observability import count, logger
from chalicelib.orders import Order
from chalicelib.services import plans
from chalicelib.store import get_store

STATES = ("pending", "frozen", "available")


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One new version of an order from the stream: what happened, and the order after it."""

    sequence: str
    action: str
    data: Mapping[str, Any]
    at: datetime
    order: Order
    image: Mapping[str, Any]


def _image(record: Mapping[str, Any], which: str) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

    dynamodb = DynamoDBRecord(dict(record)).dynamodb
    image = getattr(dynamodb, which) if dynamodb is not None else None
    return dict(image or {})


def _order_from_image(image: Mapping[str, Any]) -> Order:
    from chalicelib.store.orders import order_from_image

    return order_from_image(image)


def parse_event(record: Mapping[str, Any]) -> OrderEvent | None:
    """The order event in a stream record, or None when the change is not a new version."""
    new, old = _image(record, "new_image"), _image(record, "old_image")
    if not new or not new.get("event_at") or new.get("version") == old.get("version"):
        return None
    return OrderEvent(
        sequence=str(record.get("dynamodb", {}).get("SequenceNumber", "")),
        action=str(new["event_action"]),
        data=json.loads(str(new.get("event_data") or "{}")),
        at=parse_iso(str(new["event_at"])),
        order=_order_from_image(new),
        image=new,
    )


# --- the engine -----------------------------------------------------------------------------


def _month(at: datetime, timezone: str) -> str:
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def _earners_of(order: Order) -> list[str]:
    return [order.buyer, *order.snapshot.upline]


def _creation_state(plan: Plan) -> str:
    return "pending" if plan.trigger is Trigger.PAID else "frozen"


def _trace_json(earning: Earning) -> dict[str, Any]:
    trace = earning.trace
    return {
        "words": trace.words(),
        "base_fen": trace.base_fen,
        "rate_bps": trace.rate_bps,
        "fixed_fen": trace.fixed_fen,
        "ladder_tier": trace.ladder_tier,
        "campaign": trace.campaign,
        "multiplier_bps": trace.multiplier_bps,
        "capped": trace.capped,
        "uncapped_fen": trace.uncapped_fen,
        "self_purchase": trace.self_purchase,
    }


class Engine:
    """Turns a batch of order events into ledger writes."""

    def __init__(self, events: Sequence[OrderEvent]) -> None:
        self.events = events
        self.store = get_store()
        self._sales: dict[tuple[str, str], int] = {}
        self._active: set[str] | None = None

    def plan_of(self, order: Order) -> Plan | None:
        version = order.snapshot.plan_version
        return plans.plan(order.tenant, version) if version is not None else None

    def creation(self, event: OrderEvent, plan: Plan) -> LedgerWrite:
        """Commission lines created by payment (or by receipt, when the plan says so)."""
        order = event.order
        write = LedgerWrite(order.id)
        lines = [OrderLine(x.product_id, x.qty, x.paid_fen) for x in order.lines]
        attribution = Attribution(order.buyer, order.snapshot.upline, order.snapshot.buyer_is_promoter)
        sales: dict[str, int] = {}
        key = self.sales_key(event, plan)
        if key is not None:
            self._sales[key] = self._month_sales(order.tenant, key) + order.amount_fen
            sales[key[0].removeprefix("l1sales#")] = self._sales[key]
            write.add_stat(*key, "sales_fen", order.amount_fen)
            write.add_stat(*key, "orders", 1)
        earnings = commission.compute(
            lines, attribution, plan, at=order.paid_at or event.at, month_sales_fen=sales, is_active=self.is_active
        )
        state = _creation_state(plan)
        until = self._frozen_until(order, plan) if state == "frozen" else None
        if order.refunded_fen:  # commission on receipt: refunds before it count from the start
            earnings = [
                replace(
                    e, amount_fen=commission.remaining_after_refunds(e.amount_fen, order.amount_fen, order.refunded_fen)
                )
                for e in earnings
            ]
            earnings = [e for e in earnings if e.amount_fen > 0]
        for earning in earnings:
            write.new_lines.append(
                LedgerLine(
                    tenant=order.tenant,
                    promoter=earning.promoter,
                    order_id=order.id,
                    level=earning.level,
                    event=event.action.removeprefix("order."),
                    amount_fen=earning.amount_fen,
                    state=state,
                    buyer=order.buyer,
                    trace=_trace_json(earning),
                    created_at=event.at,
                    frozen_until=until,
                )
            )
            write.add_account(earning.promoter, f"{state}_fen", earning.amount_fen)
        return write

    def is_active(self, uid: str) -> bool:
        """Whether `uid` is an active promoter (read once per batch for every upline in it)."""
        if self._active is None:
            self._active = set()
            by_tenant: dict[str, list[str]] = {}
            for e in self.events:
                by_tenant.setdefault(e.order.tenant, []).extend(_earners_of(e.order))
            for tenant, uids in by_tenant.items():
                self._active |= self.store.users.promoters(tenant, uids)
        return uid in self._active

    def sales_key(self, event: OrderEvent, plan: Plan) -> tuple[str, str] | None:
        """The counter of the level-1 promoter's attributed sales in the month of payment."""
        order = event.order
        attribution = Attribution(order.buyer, order.snapshot.upline, order.snapshot.buyer_is_promoter)
        level1 = commission.earners(attribution, plan, self.is_active)[:1]
        if not level1:
            return None
        return f"l1sales#{level1[0][1]}", _month(order.paid_at or event.at, plan.timezone)

    def _month_sales(self, tenant: str, key: tuple[str, str]) -> int:
        """Month-to-date sales before this batch (read once per batch for all its promoters)."""
        if key not in self._sales:
            wanted = {key}
            for other in self.events:
                other_plan = self.plan_of(other.order) if other.order.tenant == tenant else None
                other_key = self.sales_key(other, other_plan) if other_plan else None
                if other_key is not None and other_key not in self._sales:
                    wanted.add(other_key)
            self._sales.update(self.store.ledger.counters(tenant, wanted))
        return self._sales[key]

    @staticmethod
    def _frozen_until(order: Order, plan: Plan) -> datetime:
        received = order.received_at or utcnow()
        return settlement.due_at(received, plan.settlement, plan.settle_after_days, plan.timezone)

    def receipt(self, event: OrderEvent, plan: Plan) -> LedgerWrite:
        """Receipt starts the return window: pending lines freeze until it ends."""
        if plan.trigger is Trigger.RECEIVED:
            return self.creation(event, plan)
        order = event.order
        write = LedgerWrite(order.id)
        until = self._frozen_until(order, plan)
        for line in self.store.ledger.lines_of_order(order.tenant, order.id, _earners_of(order)):
            if line.state == "pending":
                write.moves.append((line, "frozen", until))
                write.add_account(line.promoter, "pending_fen", -line.amount_fen)
                write.add_account(line.promoter, "frozen_fen", line.amount_fen)
        return write

    def refund(self, event: OrderEvent) -> LedgerWrite:
        """A refund reverses each level in proportion; a full refund brings it to exactly zero."""
        order = event.order
        write = LedgerWrite(order.id)
        refund_id = str(event.data["refund_id"])
        refund_fen = int(event.data["amount_fen"])
        before = int(event.data["refunded_before_fen"])
        lines = self.store.ledger.lines_of_order(order.tenant, order.id, _earners_of(order))
        for created in (line for line in lines if line.amount_fen > 0):
            delta = commission.reversal(created.amount_fen, order.amount_fen, before, refund_fen)
            if delta == 0:
                continue
            write.new_lines.append(
                LedgerLine(
                    tenant=order.tenant,
                    promoter=created.promoter,
                    order_id=order.id,
                    level=created.level,
                    event=f"refund-{refund_id}",
                    amount_fen=delta,
                    state=created.state,  # after settlement this is a clawback from available
                    buyer=order.buyer,
                    trace={"words": f"refund {refund_fen} fen of {order.amount_fen} fen", "refund_id": refund_id},
                    created_at=event.at,
                    frozen_until=created.frozen_until,
                )
            )
            write.add_account(created.promoter, f"{created.state}_fen", delta)
        return write

    def write_for(self, event: OrderEvent) -> LedgerWrite:
        plan = self.plan_of(event.order)
        if plan is None:
            return LedgerWrite(event.order.id)
        if event.action == "order.paid" and plan.trigger is Trigger.PAID:
            return self.creation(event, plan)
        if event.action == "order.received":
            return self.receipt(event, plan)
        if event.action == "order.refunded":
            return self.refund(event)
        return LedgerWrite(event.order.id)  # created, cancelled: no commission


def chunks(writes: Iterable[LedgerWrite]) -> list[list[LedgerWrite]]:
    """Group writes so that each group's merged transaction stays within 100 items."""
    groups: list[list[LedgerWrite]] = []
    current: list[LedgerWrite] = []
    for write in writes:
        if current and tx_items(merge([*current, write])) > MAX_TX_ITEMS:
            groups.append(current)
            current = []
        current.append(write)
    if current:
        groups.append(current)
    return groups


def process_stream_batch(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Handle one batch of order stream records; returns Lambda's partial batch response."""
    failures: list[str] = []
    events: list[OrderEvent] = []
    for record in records:
        try:
            event = parse_event(record)
        except (KeyError, ValueError, TypeError) as exc:
            logger.error("unreadable order record", extra={"error": str(exc)})
            failures.append(str(record.get("dynamodb", {}).get("SequenceNumber", "")))
            continue
        if event is not None:
            events.append(event)
    failed = _process(events)
    failures += [e.sequence for e in events if e.order.id in failed]
    if failures:
        count("CommissionFailures", len(failures))
    # Lambda retries from the first failure on; order matters, so report them in stream order.
    ordered = [str(r.get("dynamodb", {}).get("SequenceNumber", "")) for r in records]
    return {"batchItemFailures": [{"itemIdentifier": s} for s in ordered if s in set(failures)]}


def _process(events: Sequence[OrderEvent]) -> set[str]:
    """Write the events; returns the ids of orders that failed (to be retried)."""
    failed: set[str] = set()
    store = get_store()
    for event in events:
        try:
            store.audit.append_version(event.order.tenant, f"order:{event.order.id}", event.image)
        except Exception:  # one bad record must not block the others; it is retried
            logger.exception("audit of an order event failed", extra={"order": event.order.id})
            failed.add(event.order.id)
    engine = Engine([e for e in events if e.order.id not in failed])
    fast = [e for e in engine.events if e.action == "order.paid"]
    slow = [e for e in engine.events if e.action != "order.paid"]
    failed |= _fast_path(engine, fast)
    for event in slow:
        if event.order.id in failed:
            continue  # keep the order's events in order: retry from the first failure
        failed |= _one(engine, event)
    return failed


def _fast_path(engine: Engine, events: Sequence[OrderEvent]) -> set[str]:
    writes: list[tuple[OrderEvent, LedgerWrite]] = []
    failed: set[str] = set()
    for event in events:
        try:
            writes.append((event, engine.write_for(event)))
        except Exception:
            logger.exception("commission computation failed", extra={"order": event.order.id})
            failed.add(event.order.id)
    by_tenant: dict[str, list[tuple[OrderEvent, LedgerWrite]]] = {}
    for event, write in writes:
        by_tenant.setdefault(event.order.tenant, []).append((event, write))
    for tenant, pairs in by_tenant.items():
        for group in chunks(w for _, w in pairs if not w.empty):
            if _apply_group(engine, tenant, group):
                count("CommissionOrders", len(group))
                continue
            for write in group:  # a replayed order in the group: one transaction each
                event = next(e for e, w in pairs if w is write)
                failed |= _apply_one(engine, event, write)
    return failed


def _apply_group(engine: Engine, tenant: str, group: list[LedgerWrite]) -> bool:
    try:
        return engine.store.ledger.apply(tenant, merge(group))
    except Exception:  # fall back to one transaction per order
        logger.exception("batch transaction failed", extra={"orders": len(group)})
        return False


def _one(engine: Engine, event: OrderEvent) -> set[str]:
    try:
        return _apply_one(engine, event, engine.write_for(event))
    except Exception:
        logger.exception("commission computation failed", extra={"order": event.order.id})
        return {event.order.id}


def _apply_one(engine: Engine, event: OrderEvent, write: LedgerWrite) -> set[str]:
    try:
        if not engine.store.ledger.apply(event.order.tenant, write):
            count("CommissionReplays")
            logger.info("order event already applied", extra={"order": event.order.id, "action": event.action})
        return set()
    except Exception:
        logger.exception("commission write failed", extra={"order": event.order.id})
        return {event.order.id}


# --- the promoter's views -------------------------------------------------------------------


def account(principal: Principal) -> dict[str, int]:
    return get_store().ledger.account(principal.tenant, principal.subject)


def mask(name: str) -> str:
    """A buyer's display name as a promoter may see it: first character, then stars."""
    return (name[:1] + "**") if name else "**"


def my_commissions(principal: Principal, state: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
    if state is not None and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", code="invalid_state")
    store = get_store()
    page = store.ledger.lines(principal.tenant, principal.subject, state, cursor, limit)
    names = store.users.names(principal.tenant, [line.buyer for line in page.items]) if page.items else {}
    items = [
        {
            "order_id": line.order_id,
            "level": line.level,
            "event": line.event,
            "amount_fen": line.amount_fen,
            "state": line.state,
            "buyer": mask(names.get(line.buyer, "")),
            "trace": line.trace.get("words", ""),
            "created_at": iso(line.created_at),
            "frozen_until": iso(line.frozen_until) if line.frozen_until else None,
        }
        for line in page.items
    ]
    return {"items": items, "next_cursor": page.next_cursor}
