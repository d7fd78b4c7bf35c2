"""The settlement run: frozen commission whose time has come becomes available."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from chalicelib.clock import iso
from chalicelib.entities import AuditEvent
from chalicelib.ledger import Applied, LedgerLine, LedgerWrite, merge, settlement
from chalicelib.observability import count, logger
from chalicelib.services.commissions import chunks
from chalicelib.store import get_store

PAGE = 90


def settle(now: datetime, *, tenant: str | None = None, actor: str = "system:settle") -> dict[str, Any]:
    """Move every due frozen line to available, with the account totals in the same transaction.

    Pages through the sparse `due` index (flat memory); each move is conditional on the line
    still being frozen and unchanged since it was read, so a second or concurrent run moves
    nothing twice. A refund's adjustment line takes the state its original line is in and
    follows it (`chalicelib.ledger.settlement`): a refund racing this run either adjusts the
    line before it settles or claws back after it, never both. The run is recorded in the
    audit trail.
    """
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    store = get_store()
    lines = amount = 0
    tenants = []
    for tenant_id in [tenant] if tenant else [t.id for t in store.tenants.all()]:
        moved, fen = _settle_tenant(tenant_id, now)
        lines += moved
        amount += fen
        if moved:
            tenants.append(tenant_id)
            run = f"settlement:{iso(now)}#{uuid.uuid4().hex[:6]}"
            data = {"lines": moved, "amount_fen": fen, "until": iso(now)}
            event = AuditEvent(entity=run, action="settlement.run", actor=actor, data=data)
            audit.put_once(audit.build(tenant_id, event, now, None))
    count("LinesSettled", lines)
    logger.info("settlement run", extra={"lines": lines, "amount_fen": amount})
    return {"lines": lines, "amount_fen": amount, "tenants": tenants, "until": iso(now)}


def _settle_tenant(tenant: str, now: datetime) -> tuple[int, int]:
    store = get_store()
    moved = amount = 0
    while True:
        due = store.ledger.due_lines(tenant, now, PAGE)  # from the index: read each line again
        writes = _due_writes(tenant, [line.key() for line in due], now)
        progress = 0
        for group in chunks(writes):
            if store.ledger.write(tenant, merge(group)) is Applied.WRITTEN:
                progress += len(group)
                amount += sum(_settled_fen(w) for w in group)
                continue
            for write in group:  # a line changed meanwhile (refunded, settled by another run)
                if store.ledger.write(tenant, write) is Applied.WRITTEN:
                    progress += 1
                    amount += _settled_fen(write)
        moved += progress
        if len(due) < PAGE or progress == 0:
            return moved, amount


def _due_writes(tenant: str, keys: list[tuple[str, str]], now: datetime) -> list[LedgerWrite]:
    """What settles of these lines, decided on a strongly consistent read of each line and of
    the adjustment lines that follow it (a refund and a settlement never both take a line)."""
    store = get_store()
    lines = store.ledger.get_lines(tenant, keys)
    follower_keys = [(line.promoter, _sk(line, event)) for line in lines.values() for event in line.adjustments]
    followers = store.ledger.get_lines(tenant, follower_keys) if follower_keys else {}
    writes = []
    for key in keys:
        line = lines.get(key)
        if line is None:
            continue
        mine = {e: f for e in line.adjustments if (f := followers.get((line.promoter, _sk(line, e)))) is not None}
        write = settlement(line, mine, now)
        if write is not None:
            writes.append(write)
    return writes


def _sk(line: LedgerLine, event: str) -> str:
    return f"{line.order_id}#{line.level}#{event}"


def _settled_fen(write: LedgerWrite) -> int:
    return sum(move.line.amount_fen for move in write.moves)
