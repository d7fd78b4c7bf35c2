"""What an order event writes to the ledger, as data (pure, no I/O).

The commission engine reads the lines, calls one of these rules and the store writes the
outcome in one transaction. The rules:

* **Creation** (payment, or receipt when the plan pays on receipt): one line per level, worth
  the level's commission on the whole paid amount (its *original* amount) scaled to what is
  not refunded yet, in the plan's creation state; the level-1 promoter's month-of-payment
  sales counter (the ladder) grows by the net paid amount.
* **Receipt** (plan pays on payment): pending lines freeze until the return window ends.
* **Refund, failed refund**: each level is brought to its original amount x net paid / paid,
  rounded down, by one adjustment line (`refund-<id>`, `refund-<id>-undo`) in the state its
  original line is in *now*; the sales counter follows the net paid amount. Because the
  target is computed from the original amount (never from a line already scaled down), a
  full refund nets to exactly zero at every level under every trigger, and a refund that
  fails at WeChat returns exactly what its reversal took.
* **Settlement**: a due frozen line becomes available with the adjustment lines that follow it.

Every rule reads lines and writes conditional on them: a new line must not exist yet (its key
is order#level#event, so a replay writes nothing), and a line that is moved or annotated must
still be in the state and have the trace it was read with. An original line records the last
order version applied to it, the adjustments that follow it and the sales it counted, so a
stale or repeated order version changes nothing, and a refund racing the settle job is either
reversed before the line settles or clawed back after it, never both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from chalicelib import counters
from chalicelib.commission import Earning, remaining_after_refunds

MAX_TX_ITEMS = 100  # DynamoDB's limit of items in one transaction
BUCKETS = ("pending_fen", "frozen_fen", "available_fen", "withdrawing_fen", "paid_fen")
CREATION_EVENTS = ("paid", "received")


class Applied(StrEnum):
    """How a ledger write ended."""

    WRITTEN = "written"
    REPLAY = "replay"  # a new line exists already: nothing was written
    STALE = "stale"  # a line read is no longer as it was read: nothing was written, read again
    CONFLICT = "conflict"  # concurrent transactions on the same items, retries exhausted


@dataclass(frozen=True, slots=True)
class LedgerLine:
    tenant: str
    promoter: str
    order_id: str
    level: int
    event: str
    amount_fen: int
    state: str
    buyer: str
    trace: Mapping[str, Any]
    created_at: datetime
    frozen_until: datetime | None = None
    due: bool = True  # a frozen line settles on its own (an adjustment follows its original instead)

    @property
    def sk(self) -> str:
        return f"{self.order_id}#{self.level}#{self.event}"

    @property
    def is_creation(self) -> bool:
        return self.event in CREATION_EVENTS

    @property
    def original_fen(self) -> int:
        """The level's commission on the whole paid amount, before any refund."""
        return int(self.trace.get("original_fen", self.amount_fen))

    @property
    def version(self) -> int:
        """The last order version applied to this line (0: none recorded)."""
        return int(self.trace.get("version", 0))

    @property
    def adjustments(self) -> tuple[str, ...]:
        """Events of the adjustment lines that follow this line's state."""
        return tuple(self.trace.get("adjustments", ()))

    def key(self) -> tuple[str, str]:
        return self.promoter, self.sk


@dataclass(frozen=True, slots=True)
class Move:
    """A line's new state (or only its new trace), conditional on the state and trace read."""

    line: LedgerLine
    state: str
    frozen_until: datetime | None = None  # None: unchanged
    trace: Mapping[str, Any] | None = None  # None: unchanged
    due: bool = True


@dataclass
class LedgerWrite:
    """What one order event changes: new lines, line moves, account and counter deltas."""

    order_id: str
    new_lines: list[LedgerLine] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    accounts: dict[str, dict[str, int]] = field(default_factory=dict)  # promoter -> bucket -> delta
    stats: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (scope, period) -> counter -> delta

    def add_account(self, promoter: str, bucket: str, delta: int) -> None:
        if delta == 0:
            return
        bucket_deltas = self.accounts.setdefault(promoter, {})
        bucket_deltas[bucket] = bucket_deltas.get(bucket, 0) + delta

    def add_stat(self, scope: str, period: str, counter: str, delta: int) -> None:
        if delta == 0:
            return
        values = self.stats.setdefault((scope, period), {})
        values[counter] = values.get(counter, 0) + delta

    @property
    def empty(self) -> bool:
        return not (self.new_lines or self.moves)


def merge(writes: Iterable[LedgerWrite]) -> LedgerWrite:
    """Many orders' writes as one: account and counter deltas added up per item."""
    merged = LedgerWrite(order_id="*")
    for write in writes:
        merged.new_lines += write.new_lines
        merged.moves += write.moves
        for promoter, deltas in write.accounts.items():
            for bucket, delta in deltas.items():
                merged.add_account(promoter, bucket, delta)
        for (scope, period), values in write.stats.items():
            for counter, delta in values.items():
                merged.add_stat(scope, period, counter, delta)
    return merged


def tx_items(write: LedgerWrite) -> int:
    """How many items a write touches (a transaction holds at most 100)."""
    return len(write.new_lines) + len(write.moves) + len(write.accounts) + len(write.stats)


# --- order events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderVersion:
    """One version of an order, as the ledger needs it."""

    tenant: str
    order_id: str
    buyer: str
    version: int
    paid_fen: int
    refunded_fen: int  # in total, after this version
    at: datetime

    @property
    def net_fen(self) -> int:
        return max(self.paid_fen - min(max(self.refunded_fen, 0), self.paid_fen), 0)


@dataclass(frozen=True, slots=True)
class Report:
    """What the report counters of an order's commission need: the tenant's timezone and the
    order's sources (`chalicelib.counters`)."""

    timezone: str
    sources: counters.Sources


def _count_line(write: LedgerWrite, line: LedgerLine, amount: int, month: str, net_delta: int, orders_delta: int,
                report: Report) -> None:  # fmt: skip
    deltas: counters.Deltas = {}
    day = counters.day_of(line.created_at, report.timezone)
    counters.commission(
        deltas, line.promoter, line.level, amount=amount, day=day, month=month, net_delta=net_delta,
        orders_delta=orders_delta,
    )  # fmt: skip
    _add_deltas(write, deltas)


def _count_sources(write: LedgerWrite, at: datetime, amount: int, report: Report) -> None:
    deltas: counters.Deltas = {}
    report.sources.add(deltas, counters.day_of(at, report.timezone), "commission_fen", amount)
    _add_deltas(write, deltas)


def _add_deltas(write: LedgerWrite, deltas: counters.Deltas) -> None:
    for (scope, period), values in deltas.items():
        for counter, delta in values.items():
            write.add_stat(scope, period, counter, delta)


@dataclass(frozen=True, slots=True)
class SalesKey:
    """The ladder counter an order's sales go to: the level-1 promoter in the month of payment."""

    scope: str  # l1sales#<promoter>
    period: str  # YYYY-MM in the plan's timezone


def trace_of(earning: Earning) -> dict[str, Any]:
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


def creation(
    order: OrderVersion,
    event: str,
    earnings: Sequence[Earning],
    *,
    state: str,
    frozen_until: datetime | None,
    sales: SalesKey | None,
    report: Report | None = None,
) -> LedgerWrite:
    """The lines a payment (or a receipt) creates: each level's original amount scaled to the
    net paid amount (refunds made before commission on receipt count from the start).

    With `report`, the lines count towards the report counters, and each records what it
    counted (`report`: the month and the net paid amount) for later adjustments to correct."""
    write = LedgerWrite(order.order_id)
    counted = [sales.scope, sales.period, order.net_fen] if sales else None
    month = counters.month_of(order.at, report.timezone) if report else None
    for earning in earnings:
        if earning.amount_fen <= 0:
            continue
        amount = remaining_after_refunds(earning.amount_fen, order.paid_fen, order.refunded_fen)
        trace = {
            **trace_of(earning),
            "original_fen": earning.amount_fen,
            "paid_fen": order.paid_fen,
            "version": order.version,
            "sales": counted,
        }
        if month is not None:
            trace["report"] = {"month": month, "net_fen": order.net_fen}
        line = LedgerLine(
            tenant=order.tenant,
            promoter=earning.promoter,
            order_id=order.order_id,
            level=earning.level,
            event=event,
            amount_fen=amount,
            state=state,
            buyer=order.buyer,
            trace=trace,
            created_at=order.at,
            frozen_until=frozen_until if state == "frozen" else None,
        )
        write.new_lines.append(line)
        write.add_account(earning.promoter, f"{state}_fen", amount)
        if report is not None and month is not None:
            _count_line(write, line, amount, month, order.net_fen, int(order.net_fen > 0), report)
    if report is not None and write.new_lines:
        _count_sources(write, order.at, sum(line.amount_fen for line in write.new_lines), report)
    if write.new_lines and sales is not None:  # counted with the lines: a replay counts nothing twice
        write.add_stat(sales.scope, sales.period, "sales_fen", order.net_fen)
        write.add_stat(sales.scope, sales.period, "orders", 1 if order.net_fen > 0 else 0)
    return write


def receipt(order_id: str, lines: Sequence[LedgerLine], frozen_until: datetime) -> LedgerWrite:
    """Receipt starts the return window: pending lines (and what follows them) freeze."""
    write = LedgerWrite(order_id)
    followers = {(line.promoter, line.level, event) for line in lines for event in line.adjustments}
    for line in lines:
        if line.state != "pending":
            continue
        due = (line.promoter, line.level, line.event) not in followers
        write.moves.append(Move(line, "frozen", frozen_until, due=due))
        write.add_account(line.promoter, "pending_fen", -line.amount_fen)
        write.add_account(line.promoter, "frozen_fen", line.amount_fen)
    return write


def adjustment(
    order: OrderVersion,
    lines: Sequence[LedgerLine],
    event: str,
    words: str,
    *,
    fallback_sales: SalesKey | None = None,
    report: Report | None = None,
) -> LedgerWrite:
    """Bring each level to its original amount x net paid / paid after a refund (or a failed
    refund) with one line `event`, in the state its original line is in now.

    Lines that already saw this order version (or a later one) are left alone: a replayed or
    stale version changes nothing. `fallback_sales` is the ladder counter of lines written
    before they recorded their own (they counted the whole paid amount). With `report`, lines
    that recorded what they counted towards the reports correct it (in their creation month);
    lines written before reports were counted stay out of them.
    """
    write = LedgerWrite(order.order_id)
    existing = {line.key() for line in lines}
    originals = sorted((line for line in lines if line.is_creation), key=lambda line: line.level)
    pending = [line for line in originals if line.version < order.version]
    if not pending:
        return write
    sales = _counted_sales(pending[0], fallback_sales)
    new_sales = [sales[0], sales[1], order.net_fen] if sales else None
    reported = 0
    for original in pending:
        group = [x for x in lines if x.promoter == original.promoter and x.level == original.level]
        paid = int(original.trace.get("paid_fen", order.paid_fen))
        target = remaining_after_refunds(original.original_fen, paid, order.refunded_fen)
        delta = target - sum(x.amount_fen for x in group)
        line = replace(
            original,
            event=event,
            amount_fen=delta,
            trace={"words": words, "order_refunded_fen": order.refunded_fen, "version": order.version},
            created_at=order.at,
            due=False,
        )
        if line.key() in existing:
            continue  # written before versions were recorded: a later version settles any difference
        follows = delta != 0
        if follows:
            write.new_lines.append(line)
            write.add_account(original.promoter, f"{original.state}_fen", delta)
        trace = {
            **original.trace,
            "version": order.version,
            "adjustments": [*original.adjustments, event] if follows else list(original.adjustments),
            "sales": new_sales,
        }
        counted = original.trace.get("report")
        if report is not None and isinstance(counted, Mapping):
            before = int(counted["net_fen"])
            trace["report"] = {**counted, "net_fen": order.net_fen}
            orders_delta = int(order.net_fen > 0) - int(before > 0)
            _count_line(write, line, delta, str(counted["month"]), order.net_fen - before, orders_delta, report)
            reported += delta
        write.moves.append(Move(original, original.state, trace=trace))
    if report is not None and reported:
        _count_sources(write, order.at, reported, report)
    if sales is not None:
        write.add_stat(sales[0], sales[1], "sales_fen", order.net_fen - sales[2])
        write.add_stat(sales[0], sales[1], "orders", int(order.net_fen > 0) - int(sales[2] > 0))
    return write


def _counted_sales(original: LedgerLine, fallback: SalesKey | None) -> tuple[str, str, int] | None:
    """The ladder counter an order's lines counted their sales in, and how much they counted."""
    if "sales" in original.trace:
        recorded = original.trace["sales"]
        return (str(recorded[0]), str(recorded[1]), int(recorded[2])) if recorded else None
    paid = int(original.trace.get("paid_fen", 0)) or None
    if fallback is None or paid is None:
        return None
    return fallback.scope, fallback.period, paid


def settlement(line: LedgerLine, followers: Mapping[str, LedgerLine], now: datetime) -> LedgerWrite | None:
    """A due frozen line becomes available, with the frozen adjustment lines that follow it
    (`followers` by event); None when the line is not (or no longer) due."""
    if line.state != "frozen" or line.frozen_until is None or line.frozen_until > now:
        return None
    write = LedgerWrite(line.order_id)
    moved = [line] + [f for e in line.adjustments if (f := followers.get(e)) is not None and f.state == "frozen"]
    for each in moved:
        write.moves.append(Move(each, "available"))
        write.add_account(each.promoter, "frozen_fen", -each.amount_fen)
        write.add_account(each.promoter, "available_fen", each.amount_fen)
    return write
