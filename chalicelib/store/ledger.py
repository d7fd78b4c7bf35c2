"""The commission ledger, promoter accounts and sales counters: ledger lines, the account
buckets they move and the counters they add to, written together in one transaction per batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import Page
from chalicelib.ledger import BUCKETS, MAX_TX_ITEMS, Applied, LedgerLine, LedgerWrite, Move, tx_items
from chalicelib.retry import Retry
from chalicelib.store import shards
from chalicelib.store.audit import canonical
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AccountModel, LedgerModel, StatsModel


def to_line(item: LedgerModel) -> LedgerLine:
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
        due=item.state != "frozen" or item.frozen_key is not None,
    )


# Concurrent batches (Lambda's ParallelizationFactor) write to the same hot promoter's account;
# DynamoDB cancels one of two overlapping transactions with TransactionConflict. Retrying inside
# the invocation, with full-jitter exponential waits so the writers spread out, turns that
# contention into a short wait instead of a failed record: at most six attempts, waits of up to
# 20, 40, 80, 160, 320 ms (capped at 400), about a second at worst.
CONFLICT_RETRY = Retry(tries=6, first_s=0.02, cap_s=0.4)


class LedgerStore:
    def __init__(self, tx: Transactions, retry: Retry = CONFLICT_RETRY) -> None:
        self._tx = tx
        self._retry = retry
        self.transactions = 0  # counted for benchmarks
        self.conflicts = 0  # transaction conflicts retried

    def apply(self, tenant: str, write: LedgerWrite) -> bool:
        """Write everything in one transaction; False when it was refused (a line exists
        already, or a line moved is no longer as it was read): nothing is written then."""
        outcome = self.write(tenant, write)
        if outcome is Applied.CONFLICT:
            raise RuntimeError("transaction conflict: retry the batch")
        return outcome is Applied.WRITTEN

    def write(self, tenant: str, write: LedgerWrite) -> Applied:
        """Write everything in one transaction, retrying conflicts by the backoff policy.

        New lines are put only if they do not exist (a replay writes nothing: REPLAY); a line
        moved or annotated only if its state and trace are still those read (else STALE: read
        again and decide again); account and counter deltas are ADDs in the same transaction.
        """
        if write.empty:
            return Applied.WRITTEN
        if tx_items(write) > MAX_TX_ITEMS:
            raise ValueError("too many items for one transaction")

        body = _transaction(tenant, write)
        for attempt in self._retry:
            self.transactions += 1
            outcome = self._tx.run(body)
            if outcome.committed:
                return Applied.WRITTEN
            if not outcome.conflict:
                puts = len(write.new_lines)
                return Applied.STALE if any(i >= puts for i in outcome.failed_items) else Applied.REPLAY
            self.conflicts += attempt + 1 < self._retry.tries  # retried, not given up
            self._retry.pause(attempt)
        return Applied.CONFLICT

    def existing(self, tenant: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (promoter, sk) lines exist (strongly consistent)."""
        wanted = list(dict.fromkeys(keys))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(wanted), 100):
            page = [(f"{tenant}#{p}", sk) for p, sk in wanted[start : start + 100]]
            for item in LedgerModel.batch_get(page, consistent_read=True, attributes_to_get=["pk", "sk"]):
                found.add((item.pk.split("#", 1)[1], item.sk))
        return found

    def get_lines(self, tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LedgerLine]:
        """These (promoter, sk) lines, those that exist (strongly consistent)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], LedgerLine] = {}
        for start in range(0, len(wanted), 100):
            page = [(f"{tenant}#{p}", sk) for p, sk in wanted[start : start + 100]]
            for item in LedgerModel.batch_get(page, consistent_read=True):
                line = to_line(item)
                found[line.key()] = line
        return found

    def lines_of_order(self, tenant: str, order_id: str, promoters: Iterable[str]) -> list[LedgerLine]:
        """Every line of an order (strongly consistent: queried per possible promoter)."""
        lines: list[LedgerLine] = []
        for promoter in dict.fromkeys(promoters):
            query = LedgerModel.query(
                f"{tenant}#{promoter}", LedgerModel.sk.startswith(f"{order_id}#"), consistent_read=True
            )
            lines += [to_line(i) for i in query]
        return lines

    def due_lines(self, tenant: str, now: datetime, limit: int) -> list[LedgerLine]:
        """Frozen lines whose time has come, earliest first over every shard of the sparse index
        (one page)."""

        def query(partition: str) -> list[Any]:
            return list(LedgerModel.due.query(partition, LedgerModel.frozen_until <= iso(now), limit=limit))

        due = shards.first(f"{tenant}#frozen", query, lambda item: (item.frozen_until, item.pk, item.sk), limit)
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
            for item in due
        ]

    def account(self, tenant: str, promoter: str) -> dict[str, int]:
        try:
            item = AccountModel.get(f"{tenant}#{promoter}", consistent_read=True)
        except AccountModel.DoesNotExist:
            return dict.fromkeys(BUCKETS, 0)
        return {bucket: int(getattr(item, bucket) or 0) for bucket in BUCKETS}

    def accounts(self, tenant: str, promoters: Iterable[str]) -> dict[str, dict[str, int]]:
        """These promoters' accounts (strongly consistent batch gets, 100 keys a call); a
        promoter without an account has zeros."""
        return accounts(tenant, promoters)

    def lines(self, tenant: str, promoter: str, state: str | None, cursor: str | None, limit: int) -> Page[LedgerLine]:
        key = f"{tenant}#{promoter}"
        start = decode_cursor(cursor, hash_attr="pk", hash_value=key)
        condition = LedgerModel.state == state if state else None
        result = LedgerModel.query(
            key, filter_condition=condition, scan_index_forward=False, limit=limit, last_evaluated_key=start
        )
        return Page([to_line(i) for i in result], encode_cursor(result.last_evaluated_key))

    def all_lines(self, tenant: str, promoter: str) -> list[LedgerLine]:
        return [to_line(i) for i in LedgerModel.query(f"{tenant}#{promoter}", consistent_read=True)]

    def counters(self, tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """sales_fen of (scope, period) counters, strongly consistent."""
        wanted = list(dict.fromkeys(keys))
        found = {
            (i.pk.split("#", 1)[1], i.period): int(i.sales_fen or 0)
            for i in StatsModel.batch_get([(f"{tenant}#{s}", p) for s, p in wanted], consistent_read=True)
        }
        return {key: found.get(key, 0) for key in wanted}


def accounts(tenant: str, promoters: Iterable[str]) -> dict[str, dict[str, int]]:
    """Accounts of these promoters by id, zeros for those without one (batch gets)."""
    wanted = list(dict.fromkeys(promoters))
    found = {uid: dict.fromkeys(BUCKETS, 0) for uid in wanted}
    keys = [f"{tenant}#{uid}" for uid in wanted]
    for item in AccountModel.batch_get(keys, consistent_read=True, attributes_to_get=["pk", *BUCKETS]):
        found[item.pk.split("#", 1)[1]] = {bucket: int(getattr(item, bucket) or 0) for bucket in BUCKETS}
    return found


def _transaction(tenant: str, write: LedgerWrite) -> Callable[[TransactWrite], None]:
    """The transaction of a ledger write: conditional puts first, then the updates."""

    def body(tx: TransactWrite) -> None:
        for line in write.new_lines:  # puts: the first items of the transaction
            tx.save(_line_item(line), condition=LedgerModel.sk.does_not_exist())
        for move in write.moves:  # then the updates, moves first
            tx.update(
                LedgerModel(f"{tenant}#{move.line.promoter}", move.line.sk),
                actions=_move_actions(tenant, move),
                condition=(LedgerModel.state == move.line.state)
                & (LedgerModel.trace == canonical(dict(move.line.trace))),
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

    return body


def _due_key(tenant: str, promoter: str, sk: str) -> str:
    """The due index partition of a frozen line (one of `shards.SHARDS` per tenant)."""
    return shards.key(f"{tenant}#frozen", f"{tenant}#{promoter}#{sk}")


def _move_actions(tenant: str, move: Move) -> list[Any]:
    """A line's new state and trace; frozen lines that settle on their own (only they) sit in
    the sparse `due` index."""
    actions: list[Any] = [LedgerModel.state.set(move.state)]
    if move.frozen_until is not None:
        actions.append(LedgerModel.frozen_until.set(iso(move.frozen_until)))
    if move.trace is not None:
        actions.append(LedgerModel.trace.set(canonical(dict(move.trace))))
    if move.state == "frozen" and move.due:
        actions.append(LedgerModel.frozen_key.set(_due_key(tenant, move.line.promoter, move.line.sk)))
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
        frozen_key=_due_key(line.tenant, line.promoter, line.sk)
        if line.state == "frozen" and line.frozen_until and line.due
        else None,
    )
