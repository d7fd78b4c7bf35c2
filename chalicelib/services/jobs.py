"""Scheduled jobs, runnable on their schedule or at once by an owner (`/v1/admin/jobs/{name}/run`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent
from chalicelib.errors import NotFound
from chalicelib.observability import count, logger
from chalicelib.store import get_store

Job = Callable[[datetime], dict[str, Any]]


def seal_audit(now: datetime) -> dict[str, Any]:
    """Seal yesterday's (UTC) audit trail of every tenant: one digest over all its records.

    The seal is itself an append-only record with a fixed key, so running twice seals once;
    each seal names the previous day's digest, chaining the days together.
    """
    from chalicelib.store import audit

    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    prev_day = (now - timedelta(days=2)).strftime("%Y-%m-%d")
    sealed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for tenant in get_store().tenants.all():
        records = audit.day_records(tenant.id, day)
        digest = hashlib.sha256("\n".join(h for _, h in records).encode()).hexdigest()
        previous = audit.latest(tenant.id, f"seal:{prev_day}")
        data = {
            "day": day,
            "records": len(records),
            "digest": digest,
            "previous_digest": _digest_of(previous),
        }
        event = AuditEvent(entity=f"seal:{day}", action="audit.sealed", actor="system:seal_audit", data=data)
        record = audit.build(tenant.id, event, datetime.fromisoformat(f"{day}T00:00:00+00:00"), None, record_id="seal")
        (sealed if audit.put_once(record) else skipped).append({"tenant": tenant.id, "records": len(records)})
    count("AuditSeals", len(sealed))
    logger.info("audit sealed", extra={"day": day, "sealed": len(sealed), "skipped": len(skipped)})
    return {"day": day, "sealed": sealed, "already_sealed": skipped}


def _digest_of(record: Any) -> str | None:
    if record is None:
        return None
    return str(json.loads(record.data).get("digest"))


def auto_receipt(now: datetime) -> dict[str, Any]:
    """Receipt for orders paid 10 days ago that the buyer never confirmed (starts the return window)."""
    from chalicelib.services import orders

    return orders.auto_receipt(now)


def settle(now: datetime) -> dict[str, Any]:
    """Frozen commission whose return window (and batch boundary) has passed becomes available."""
    from chalicelib.services import settlements

    return settlements.settle(now)


def payout_run(now: datetime) -> dict[str, Any]:
    """Approved withdrawals are enqueued, one transfer message each."""
    from chalicelib.services import payouts

    return payouts.payout_run(now)


def reconcile_payouts(now: datetime) -> dict[str, Any]:
    """Transfers still in flight are queried at WeChat and finished."""
    from chalicelib.services import payouts

    return payouts.reconcile(now)


def redrive_parked(now: datetime) -> dict[str, Any]:
    """Stream records parked after repeated failures are replayed, each item's in stream order."""
    from chalicelib.services import parking

    return parking.redrive_all(now)


def reconcile_payments(now: datetime) -> dict[str, Any]:
    """Orders still waiting for WeChat Pay (unpaid after a prepay, refunds in progress) are queried."""
    from chalicelib.services import orders

    return orders.reconcile_payments(now)


JOBS: dict[str, Job] = {
    "seal_audit": seal_audit,
    "auto_receipt": auto_receipt,
    "settle": settle,
    "payout_run": payout_run,
    "reconcile_payouts": reconcile_payouts,
    "reconcile_payments": reconcile_payments,
    "redrive_parked": redrive_parked,
}


def run(name: str, now: datetime | None = None) -> dict[str, Any]:
    """Run the job `name` now and return its summary."""
    job = JOBS.get(name)
    if job is None:
        raise NotFound(f"no job named {name!r}; jobs: {', '.join(sorted(JOBS))}", code="unknown_job")
    return job(now or utcnow())
