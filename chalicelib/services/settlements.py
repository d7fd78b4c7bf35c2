"""The settlement run: frozen commission whose time has come becomes available."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from chalicelib.clock import iso
from chalicelib.entities import AuditEvent
from chalicelib.ledger import LedgerWrite, merge
from chalicelib.observability import count, logger
from chalicelib.store import get_store

PAGE = 90


def settle(now: datetime) -> dict[str, Any]:
    """Move every due frozen line to available, with the account totals in the same transaction.

    Pages through the sparse `due` index (flat memory); each move is conditional on the line
    still being frozen, so a second or concurrent run moves nothing twice. A refund's reversal
    line takes the state its original had when the refund was applied and is settled alongside,
    so money is never both settled and reversed. The run is recorded in the audit trail.
    """
    from chalicelib.store import audit

    store = get_store()
    lines = amount = 0
    tenants = []
    for tenant in store.tenants.all():
        moved, fen = _settle_tenant(tenant.id, now)
        lines += moved
        amount += fen
        if moved:
            tenants.append(tenant.id)
            run = f"settlement:{iso(now)}#{uuid.uuid4().hex[:6]}"
            data = {"lines": moved, "amount_fen": fen, "until": iso(now)}
            event = AuditEvent(entity=run, action="settlement.run", actor="system:settle", data=data)
            audit.put_once(audit.build(tenant.id, event, now, None))
    count("LinesSettled", lines)
    logger.info("settlement run", extra={"lines": lines, "amount_fen": amount})
    return {"lines": lines, "amount_fen": amount, "tenants": tenants, "until": iso(now)}


def _settle_tenant(tenant: str, now: datetime) -> tuple[int, int]:
    from chalicelib.services.commissions import chunks

    store = get_store()
    moved = amount = 0
    while True:
        due = store.ledger.due_lines(tenant, now, PAGE)
        writes = []
        for line in due:
            write = LedgerWrite(line.order_id)
            write.moves.append((line, "available", None))
            write.add_account(line.promoter, "frozen_fen", -line.amount_fen)
            write.add_account(line.promoter, "available_fen", line.amount_fen)
            writes.append(write)
        progress = 0
        for group in chunks(writes):
            if store.ledger.apply(tenant, merge(group)):
                progress += len(group)
                amount += sum(w.moves[0][0].amount_fen for w in group)
            else:  # a line changed meanwhile (refunded, settled by another run): one by one
                for write in group:
                    if store.ledger.apply(tenant, write):
                        progress += 1
                        amount += write.moves[0][0].amount_fen
        moved += progress
        if len(due) < PAGE or progress == 0:
            return moved, amount
