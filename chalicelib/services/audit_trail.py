"""The audit trail for operators: read it page by page, and verify it has not been altered.

Dates in requests are days of the tenant's timezone; records are kept and indexed by UTC
instant, so a range of local days is a range of UTC instants that touches one UTC day more.

Verification recomputes, for every record of the range, its hash from its content and its
predecessor's hash; follows each entity's chain (the first record of an entity in the range is
linked to its predecessor outside the range, which must exist); and checks each UTC day's seal
(`seal_audit`) against a digest recomputed over that day's records. The first record that fails
is named with the reason, so an operator can look at exactly that record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import local_days
from chalicelib.api.views import audit_record_view
from chalicelib.auth import require_role
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import InvalidInput
from chalicelib.services import tenants

READERS = (Role.OWNER, Role.AUDITOR)
MAX_LIST_DAYS = 366
MAX_VERIFY_DAYS = 31
_ACTION_OR_ACTOR = 128


@dataclass(frozen=True, slots=True)
class Window:
    """A range of the tenant's local days as UTC instants `[start, end)` and the UTC days it touches."""

    start: str
    end: str
    utc_days: tuple[str, ...]


def window(tenant: str, first: str | None, last: str | None, max_days: int) -> Window:
    """The instants of local days `first..last` (default: the last 7 days up to today)."""
    zone = ZoneInfo(tenants.get(tenant).timezone)
    chosen = local_days.chosen(first, last, today=utcnow().astimezone(zone).date(), max_days=max_days)
    start, end = chosen.bounds(zone)
    days = []
    day = start.astimezone(ZoneInfo("UTC")).date()
    while datetime.combine(day, time(), ZoneInfo("UTC")) < end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return Window(iso(start), iso(end), tuple(days))


def _text_filter(value: str | None, name: str) -> str | None:
    if value is not None and not (0 < len(value) <= _ACTION_OR_ACTOR):
        raise InvalidInput(f"{name} is 1 to {_ACTION_OR_ACTOR} characters", code="invalid_filter")
    return value or None


def listing(
    principal: Principal,
    *,
    entity: str | None,
    action: str | None,
    actor: str | None,
    first: str | None,
    last: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """`{"items", "next_cursor"}`: records newest first, one entity's or every entity's."""
    # function-local: cold start (the store's base loads PynamoDB)
    from chalicelib.store.base import seal

    require_role(principal, *READERS)
    entity, action, actor = (_text_filter(v, n) for v, n in ((entity, "entity"), (action, "action"), (actor, "actor")))
    span = window(principal.tenant, first, last, MAX_LIST_DAYS)
    identity = [entity, action, actor, span.start, span.end]
    state = _resume(cursor, identity)

    def wanted(row: Any) -> bool:
        return (action is None or row.action == action) and (actor is None or row.actor == actor)

    if entity is not None:
        items, next_state = _entity_items(principal.tenant, entity, span, state, limit, wanted)
    else:
        items, next_state = _day_items(principal.tenant, span, state, limit, wanted)
    if next_state is None:
        return {"items": items, "next_cursor": None}
    next_state["q"] = identity
    return {"items": items, "next_cursor": seal(json.dumps(next_state, separators=(",", ":")).encode())}


def _resume(cursor: str | None, identity: list[Any]) -> dict[str, Any]:
    """Where a cursor left off; it must come from the same query (signed, so not forged)."""
    # function-local: cold start (the store's base loads PynamoDB)
    from chalicelib.store.base import unseal

    if not cursor:
        return {}
    try:
        state = json.loads(unseal(cursor))
    except ValueError:
        raise InvalidInput("cursor is not valid", code="invalid_cursor") from None
    if not isinstance(state, dict) or state.get("q") != identity:
        raise InvalidInput("cursor belongs to another query", code="invalid_cursor")
    return state


MAX_READS = 10  # queries per request: filters that match little give a short page and a cursor


def _entity_items(
    tenant: str, entity: str, span: Window, state: dict[str, Any], limit: int, wanted: Any
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    items: list[dict[str, Any]] = []
    key = state.get("k")
    for _ in range(MAX_READS):
        rows, key = audit.entity_page(tenant, entity, span.start, span.end, key, limit - len(items))
        items += [audit_record_view(r) for r in rows if wanted(r)]
        if key is None or len(items) >= limit:
            break
    return items, {"k": key} if key is not None else None


def _day_items(
    tenant: str, span: Window, state: dict[str, Any], limit: int, wanted: Any
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    items: list[dict[str, Any]] = []
    days = list(reversed(span.utc_days))
    position = days.index(state["d"]) if state.get("d") in days else 0
    inner = state.get("c")
    for _ in range(MAX_READS):
        if position >= len(days) or len(items) >= limit:
            break
        rows, inner = audit.day_page(tenant, days[position], span.start, span.end, inner, limit - len(items))
        items += [audit_record_view(r) for r in rows if wanted(r)]
        if inner is None:
            position += 1
    return items, {"d": days[position], "c": inner} if position < len(days) else None


def _bad(row: Any, reason: str) -> dict[str, Any]:
    return {"entity": row.entity, "id": row.sk, "at": row.at, "action": row.action, "reason": reason}


def check_records(tenant: str, rows: Iterable[Any]) -> tuple[int, dict[str, Any] | None]:
    """Hashes and chains of `rows` (any order): how many were checked, and the first bad one."""
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    by_entity: dict[str, list[Any]] = {}
    for row in rows:
        by_entity.setdefault(row.entity, []).append(row)
    checked = 0
    bad: list[tuple[str, dict[str, Any]]] = []
    for entity, chain in by_entity.items():
        chain.sort(key=lambda r: r.sk)
        previous = audit.before(tenant, entity, chain[0].sk)
        expected = previous.hash if previous is not None else audit.GENESIS
        for row in chain:
            checked += 1
            event = AuditEvent(entity=row.entity, action=row.action, actor=row.actor, data=json.loads(row.data))
            if audit.record_hash(tenant, event, row.at, row.prev_hash) != row.hash:
                bad.append((row.sk, _bad(row, "altered")))
                break
            if row.prev_hash != expected and not row.entity.startswith("seal:"):
                bad.append((row.sk, _bad(row, "broken_chain")))
                break
            expected = row.hash
    bad.sort(key=lambda found: found[0])
    return checked, bad[0][1] if bad else None


def check_seal(tenant: str, day: str, rows: list[Any]) -> dict[str, Any] | None:
    """The day's seal against a digest of its records; None when it matches or there is none yet."""
    sealed = [r for r in rows if r.entity == f"seal:{day}"]
    if not sealed:
        return None
    hashes = [r.hash for r in sorted(rows, key=lambda r: r.sk) if r.entity != f"seal:{day}"]
    digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    data = json.loads(sealed[0].data)
    if data.get("digest") != digest or data.get("records") != len(hashes):
        return _bad(sealed[0], "seal_mismatch")
    return None


def verify(principal: Principal, first: str | None, last: str | None) -> dict[str, Any]:
    """`{"ok", "checked", "seals_checked", "first_bad"}` over the local days `first..last`."""
    require_role(principal, *READERS)
    return verify_tenant(principal.tenant, first, last)


def verify_tenant(tenant: str, first: str | None, last: str | None) -> dict[str, Any]:
    """What `verify` does, for the command line (`make audit-verify`)."""
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    span = window(tenant, first, last, MAX_VERIFY_DAYS)
    checked = seals = 0
    first_bad: dict[str, Any] | None = None
    for day in span.utc_days:
        rows = audit.day_all(tenant, day)
        in_range = [r for r in rows if span.start <= r.at < span.end]
        count, bad = check_records(tenant, in_range)
        checked += count
        seal_bad = check_seal(tenant, day, rows)
        seals += any(r.entity == f"seal:{day}" for r in rows)
        first_bad = bad or seal_bad  # a record that fails explains its day's seal failing too
        if first_bad is not None:
            break
    return {"ok": first_bad is None, "checked": checked, "seals_checked": seals, "first_bad": first_bad}
