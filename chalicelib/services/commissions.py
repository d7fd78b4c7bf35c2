"""The commission engine, driven by the orders stream (a promoter's views of it: `accounts`).

For each changed order the engine reads what it needs (plan, active promoters, the ladder's
sales counters, the order's lines), lets `chalicelib.ledger` decide what the event writes
(pure), and writes that in one transaction: new lines with a condition that they do not exist
yet (key order#level#event, so a replay writes nothing), lines moved or annotated with a
condition on the state and trace they were read with (else the event is read and decided
again), and ADD updates to accounts and sales counters.

On the fast path the whole batch's payments go in one transaction per 100 items with the
account deltas added up per promoter, so a hot promoter gets one write per batch. Orders whose
lines exist already (a replayed batch) are left out before anything is computed, so they are
not counted twice towards the ladder. If a transaction is refused anyway, each order is
written in a transaction of its own. Transaction conflicts (parallel batches on one hot
promoter) are retried inside the invocation by the ledger store's backoff policy.

The order's audit record is not the engine's business: it is written with the order itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib import commission, counters, ledger, settlement
from chalicelib.clock import parse_iso, utcnow
from chalicelib.commission import Attribution, OrderLine, Plan, Trigger
from chalicelib.ledger import MAX_TX_ITEMS, Applied, LedgerWrite, OrderVersion, SalesKey, merge, tx_items
from chalicelib.observability import count, logger
from chalicelib.orders import Order
from chalicelib.retry import Retry
from chalicelib.services import plans
from chalicelib.store import get_store, stats
from chalicelib.store.orders import order_from_image

STALE_READS = Retry.at_once(5)  # one event read and decided again when its lines moved meanwhile


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One new version of an order from the stream: what happened, and the order after it."""

    sequence: str
    action: str
    data: Mapping[str, Any]
    at: datetime
    order: Order
    image: Mapping[str, Any]
    version: int = 0

    def facts(self) -> OrderVersion:
        order = self.order
        return OrderVersion(
            tenant=order.tenant,
            order_id=order.id,
            buyer=order.buyer,
            version=self.version,
            paid_fen=order.amount_fen,
            refunded_fen=order.refunded_fen,
            at=self.at,
        )


def _image(record: Mapping[str, Any], which: str) -> dict[str, Any]:
    dynamodb = DynamoDBRecord(dict(record)).dynamodb
    image = getattr(dynamodb, which) if dynamodb is not None else None
    return dict(image or {})


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
        order=order_from_image(new),
        image=new,
        version=int(str(new.get("version") or 0)),
    )


# --- the engine -----------------------------------------------------------------------------


def _month(at: datetime, timezone: str) -> str:
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def _earners_of(order: Order) -> list[str]:
    return [order.buyer, *order.snapshot.upline]


def _creation_state(plan: Plan) -> str:
    return "pending" if plan.trigger is Trigger.PAID else "frozen"


def _creates(event: OrderEvent, plan: Plan) -> bool:
    """Whether this event creates the order's commission under the plan's trigger."""
    return (event.action, plan.trigger) in (("order.paid", Trigger.PAID), ("order.received", Trigger.RECEIVED))


class Engine:
    """Turns a batch of order events into ledger writes."""

    def __init__(self, events: Sequence[OrderEvent]) -> None:
        self.events = events
        self.store = get_store()
        self._sales: dict[tuple[str, str], int] = {}
        self._active: set[str] | None = None
        self._written: set[str] | None = None
        self._reports: dict[tuple[str, str | None], tuple[str, str | None]] = {}

    def plan_of(self, order: Order) -> Plan | None:
        version = order.snapshot.plan_version
        return plans.plan(order.tenant, version) if version is not None else None

    def creation(self, event: OrderEvent, plan: Plan) -> LedgerWrite:
        """Commission lines created by payment (or by receipt, when the plan says so)."""
        order = event.order
        if self.written(event):
            count("CommissionReplays")
            return LedgerWrite(order.id)
        facts = event.facts()
        lines = [OrderLine(x.product_id, x.qty, x.paid_fen) for x in order.lines]
        attribution = Attribution(order.buyer, order.snapshot.upline, order.snapshot.buyer_is_promoter)
        month_sales: dict[str, int] = {}
        key = self.sales_key(event, plan)
        if key is not None:
            self._sales[key] = self._month_sales(order.tenant, key) + facts.net_fen
            month_sales[key[0].removeprefix("l1sales#")] = self._sales[key]
        earnings = commission.compute(
            lines,
            attribution,
            plan,
            at=order.paid_at or event.at,
            month_sales_fen=month_sales,
            is_active=self.is_active,
        )
        state = _creation_state(plan)
        return ledger.creation(
            facts,
            event.action.removeprefix("order."),
            earnings,
            state=state,
            frozen_until=self._frozen_until(order, plan) if state == "frozen" else None,
            sales=SalesKey(*key) if key else None,
            report=self.report(order),
        )

    def report(self, order: Order) -> ledger.Report:
        """The order's report keys: the tenant's timezone and the order's sources (the share's
        channel read once per batch)."""
        key = (order.tenant, order.snapshot.share_code)
        if key not in self._reports:
            self._reports[key] = (stats.timezone(order.tenant), stats.channel(*key))
        zone, channel = self._reports[key]
        snapshot = order.snapshot
        lines = ((line.product_id, line.paid_fen) for line in order.lines)
        return ledger.Report(zone, counters.Sources.of(snapshot.share_code, channel, snapshot.upline, lines))

    def written(self, event: OrderEvent) -> bool:
        """Whether the order's commission lines exist already (read once per batch for every
        order it creates commission for), so a replayed order is neither written nor counted."""
        if self._written is None:
            self._written = set()
            by_tenant: dict[str, dict[tuple[str, str], str]] = {}
            for e in self.events:
                plan = self.plan_of(e.order)
                if plan is None or not _creates(e, plan):
                    continue
                attribution = Attribution(e.order.buyer, e.order.snapshot.upline, e.order.snapshot.buyer_is_promoter)
                event_name = e.action.removeprefix("order.")
                for level, promoter in commission.earners(attribution, plan, self.is_active):
                    by_tenant.setdefault(e.order.tenant, {})[(promoter, f"{e.order.id}#{level}#{event_name}")] = (
                        e.order.id
                    )
            for tenant, keys in by_tenant.items():
                self._written |= {keys[k] for k in self.store.ledger.existing(tenant, keys)}
        return event.order.id in self._written

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

    def _lines(self, order: Order) -> list[ledger.LedgerLine]:
        return self.store.ledger.lines_of_order(order.tenant, order.id, _earners_of(order))

    def receipt(self, event: OrderEvent, plan: Plan) -> LedgerWrite:
        """Receipt starts the return window: pending lines freeze until it ends."""
        if plan.trigger is Trigger.RECEIVED:
            return self.creation(event, plan)
        return ledger.receipt(event.order.id, self._lines(event.order), self._frozen_until(event.order, plan))

    def refund(self, event: OrderEvent, plan: Plan) -> LedgerWrite:
        """A refund (or a refund that failed at WeChat) brings each level to its commission on
        the net paid amount; a full refund to exactly zero, a failed one back to before it."""
        order = event.order
        refund_id = str(event.data["refund_id"])
        amount = int(event.data["amount_fen"])
        if event.action == "order.refund_failed":
            name, words = f"refund-{refund_id}-undo", f"refund {refund_id} of {amount} fen failed at WeChat Pay: undone"
        else:
            name, words = f"refund-{refund_id}", f"refund {amount} fen of {order.amount_fen} fen"
        key = self.sales_key(event, plan)
        return ledger.adjustment(
            event.facts(),
            self._lines(order),
            name,
            words,
            fallback_sales=SalesKey(*key) if key else None,
            report=self.report(order),
        )

    def write_for(self, event: OrderEvent) -> LedgerWrite:
        plan = self.plan_of(event.order)
        if plan is None:
            return LedgerWrite(event.order.id)
        if event.action == "order.paid" and plan.trigger is Trigger.PAID:
            return self.creation(event, plan)
        if event.action == "order.received":
            return self.receipt(event, plan)
        if event.action in ("order.refunded", "order.refund_failed"):
            return self.refund(event, plan)
        return LedgerWrite(event.order.id)  # created, cancelled, refund succeeded: no commission


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
    engine = Engine(events)
    conflicts = engine.store.ledger.conflicts
    fast = [e for e in events if e.action == "order.paid"]
    slow = [e for e in events if e.action != "order.paid"]
    failed = _fast_path(engine, fast)
    for event in slow:
        if event.order.id in failed:
            continue  # keep the order's events in order: retry from the first failure
        failed |= _one(engine, event)
    if engine.store.ledger.conflicts > conflicts:
        count("CommissionConflictsRetried", engine.store.ledger.conflicts - conflicts)
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
        merged = merge(group)
        if engine.store.ledger.write(tenant, merged) is not Applied.WRITTEN:
            return False
    except Exception:  # fall back to one transaction per order
        logger.exception("batch transaction failed", extra={"orders": len(group)})
        return False
    _count_commission(merged)
    return True


def _count_commission(write: LedgerWrite) -> None:
    """Commission earned per level (`CommissionFen`, dimension `level`; the dashboard's business
    row): the earning lines a write created, clawbacks and moves left out."""
    by_level: dict[int, int] = {}
    for line in write.new_lines:
        if line.is_creation:
            by_level[line.level] = by_level.get(line.level, 0) + line.amount_fen
    for level, fen in sorted(by_level.items()):
        count("CommissionFen", fen, level=str(level))


def _one(engine: Engine, event: OrderEvent) -> set[str]:
    """One event on its own: read, decide, write; read and decide again if its lines moved."""
    try:
        for _ in STALE_READS:
            outcome = _write(engine, event, engine.write_for(event))
            if outcome is not Applied.STALE:
                return {event.order.id} if outcome is Applied.CONFLICT else set()
            count("CommissionStaleReads")
        logger.error("order lines kept moving", extra={"order": event.order.id, "action": event.action})
    except Exception:
        logger.exception("commission write failed", extra={"order": event.order.id})
    return {event.order.id}


def _apply_one(engine: Engine, event: OrderEvent, write: LedgerWrite) -> set[str]:
    try:
        outcome = _write(engine, event, write)
    except Exception:
        logger.exception("commission write failed", extra={"order": event.order.id})
        return {event.order.id}
    return {event.order.id} if outcome in (Applied.CONFLICT, Applied.STALE) else set()


def _write(engine: Engine, event: OrderEvent, write: LedgerWrite) -> Applied:
    outcome = engine.store.ledger.write(event.order.tenant, write)
    if outcome is Applied.WRITTEN:
        _count_commission(write)
    elif outcome is Applied.REPLAY:
        count("CommissionReplays")
        logger.info("order event already applied", extra={"order": event.order.id, "action": event.action})
    elif outcome is Applied.CONFLICT:
        logger.error("transaction conflicts outlasted the retries", extra={"order": event.order.id})
    return outcome
