"""Plans, the commission ledger, promoter accounts and sales counters."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page, StoredPlan
from chalicelib.ledger import BUCKETS, MAX_TX_ITEMS, LedgerLine, LedgerWrite, tx_items
from chalicelib.store import audit
from chalicelib.store.audit import canonical
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import (
    AccountModel,
    AuditModel,
    LedgerModel,
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
