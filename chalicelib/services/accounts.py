"""A promoter's account and the commission lines in it, as the "my distribution" page shows them.

The engine that writes them is `services.commissions` (orders stream); this module only reads.
"""

from __future__ import annotations

from typing import Any

from chalicelib.clock import iso
from chalicelib.entities import Principal
from chalicelib.errors import InvalidInput
from chalicelib.store import get_store

STATES = ("pending", "frozen", "available")


def account(principal: Principal) -> dict[str, int]:
    return get_store().ledger.account(principal.tenant, principal.subject)


def mask(name: str) -> str:
    """A buyer's display name as a promoter may see it: first character, then stars."""
    return (name[:1] + "**") if name else "**"


def my_commissions(principal: Principal, state: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}", code="invalid_state")
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
