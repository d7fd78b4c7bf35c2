"""Parked stream records: the redrive (schedule, CLI, an owner's request) and the operators' listing.

A redrive replays each item's parked records in stream order through the processor of the
stream that parked them. A record that applies becomes `replayed` (history, never deleted);
once none of an item's records wait, the item's new records flow again. A record that fails
again stays parked with one attempt more, and the item's later records wait behind it:
replaying them first could apply a refund before its payment.

An operator acts on their own tenant only; the schedule walks the tenants one by one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal
from chalicelib.errors import InvalidInput
from chalicelib.observability import count, gauge, logger
from chalicelib.parking import SOURCES, ParkedRecord, ParkedState
from chalicelib.store import get_store

SYSTEM_ACTOR = "system:redrive_parked"


def _check_source(source: str | None) -> str | None:
    if source is not None and source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", code="invalid_source")
    return source


def _redrive_item(tenant: str, source: str, entity: str, actor: str, now: datetime) -> tuple[int, int]:
    """Replay one item's parked records in order; (replayed, failed again: 0 or 1)."""
    # function-local: cold start (the stream side of parking stays out of import app)
    from chalicelib.events import parking

    store = get_store().parked
    replayed = 0
    for parked in store.waiting_records(tenant, source, entity):
        error = parking.replay(parked)
        if error is not None:
            store.failed_again(parked, error)
            logger.warning("parked record failed again", extra=_where(parked) | {"error": error})
            return replayed, 1
        replayed += store.mark_replayed(parked, now, actor)
    return replayed, 0


def _where(parked: ParkedRecord) -> dict[str, str]:
    return {"tenant": parked.tenant, "source": parked.source, "entity": parked.entity, "sequence": parked.sequence}


def redrive_tenant(tenant: str, source: str | None = None, *, actor: str, now: datetime) -> dict[str, Any]:
    """Replay the tenant's parked records (of one source, or all); what happened and what still waits."""
    source = _check_source(source)
    store = get_store().parked
    replayed = failed = 0
    for item_source, entity in store.waiting_items(tenant, source):
        done, stuck = _redrive_item(tenant, item_source, entity, actor, now)
        replayed += done
        failed += stuck
    waiting = sum(store.waiting(tenant, s) for s in ((source,) if source else SOURCES))
    if replayed:
        count("EventsReplayed", replayed)
    return {"replayed": replayed, "failed_again": failed, "waiting": waiting}


def redrive_all(
    now: datetime, *, tenant: str | None = None, source: str | None = None, actor: str = SYSTEM_ACTOR
) -> dict[str, Any]:
    """The schedule (and `python -m devtools.redrive`): every tenant in turn, or the one named.

    Publishes how many records still wait (`ParkedEventsWaiting`, the alarm's gauge, which takes
    the maximum) whenever it covered every source: the schedule runs one tenant per invocation."""
    replayed = failed = waiting = 0
    tenants = 0
    for tenant_id in [tenant] if tenant else [t.id for t in get_store().tenants.all()]:
        summary = redrive_tenant(tenant_id, source, actor=actor, now=now)
        if summary["replayed"] or summary["failed_again"]:
            _audit(tenant_id, actor, source, summary, now)
            tenants += 1
        replayed += summary["replayed"]
        failed += summary["failed_again"]
        waiting += summary["waiting"]
    if source is None:
        gauge("ParkedEventsWaiting", waiting, unit="Count")
    logger.info("parked records redriven", extra={"replayed": replayed, "failed_again": failed, "waiting": waiting})
    return {"replayed": replayed, "failed_again": failed, "waiting": waiting, "tenants_redriven": tenants}


def redrive_own(principal: Principal, source: str | None) -> dict[str, Any]:
    """An owner replays their own tenant's parked records; audited with the owner as actor."""
    now = utcnow()
    summary = redrive_tenant(principal.tenant, source, actor=principal.actor, now=now)
    _audit(principal.tenant, principal.actor, source, summary, now)
    return summary


def _audit(tenant: str, actor: str, source: str | None, summary: dict[str, Any], now: datetime) -> None:
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    event = AuditEvent(
        entity=f"parked:{source or 'all'}", action="parked.redriven", actor=actor, data={**summary, "source": source}
    )
    audit.put_once(audit.build(tenant, event, now, None))


def listing(
    principal: Principal, source: str | None, state: str | None, cursor: str | None, limit: int
) -> dict[str, Any]:
    """The operator's tenant's parked (default) or replayed records, oldest parking first."""
    try:
        wanted = ParkedState(state or ParkedState.PARKED.value)
    except ValueError:
        raise InvalidInput("state must be parked or replayed", code="invalid_state") from None
    page = get_store().parked.page(principal.tenant, wanted, _check_source(source), cursor, limit)
    waiting = {s: get_store().parked.waiting(principal.tenant, s) for s in SOURCES}
    return {"items": [p.view() for p in page.items], "next_cursor": page.next_cursor, "waiting": waiting}
