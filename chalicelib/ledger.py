"""Ledger writes as data: what one order event changes (pure, no I/O).

The commission engine builds them, the store writes each group in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_TX_ITEMS = 100  # DynamoDB's limit of items in one transaction
BUCKETS = ("pending_fen", "frozen_fen", "available_fen", "withdrawing_fen", "paid_fen")


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

    @property
    def sk(self) -> str:
        return f"{self.order_id}#{self.level}#{self.event}"


@dataclass
class LedgerWrite:
    """What one order event changes: new lines, line state moves, account and counter deltas."""

    order_id: str
    new_lines: list[LedgerLine] = field(default_factory=list)
    moves: list[tuple[LedgerLine, str, datetime | None]] = field(default_factory=list)  # line, new state, frozen_until
    accounts: dict[str, dict[str, int]] = field(default_factory=dict)  # promoter -> bucket -> delta
    stats: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (scope, period) -> counter -> delta

    def add_account(self, promoter: str, bucket: str, delta: int) -> None:
        bucket_deltas = self.accounts.setdefault(promoter, {})
        bucket_deltas[bucket] = bucket_deltas.get(bucket, 0) + delta

    def add_stat(self, scope: str, period: str, counter: str, delta: int) -> None:
        counters = self.stats.setdefault((scope, period), {})
        counters[counter] = counters.get(counter, 0) + delta

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
        for (scope, period), counters in write.stats.items():
            for counter, delta in counters.items():
                merged.add_stat(scope, period, counter, delta)
    return merged


def tx_items(write: LedgerWrite) -> int:
    """How many items a write touches (a transaction holds at most 100)."""
    return len(write.new_lines) + len(write.moves) + len(write.accounts) + len(write.stats)
