"""Scheduled jobs, one tenant at a time.

A schedule fans out: one message per tenant on the jobs queue (`fan_out`), each run by the queue
worker as an invocation of its own (`run_for_tenant`). An owner's `/v1/admin/jobs/{name}/run`
runs the job for the owner's tenant only, audited with the owner as actor (`run_now`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.auth import require_role
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import Missing
from chalicelib.observability import count, logger
from chalicelib.services import exports, orders, parking, payouts
from chalicelib.store import get_store

# (now, tenant, actor) -> summary: every job acts on one tenant at a time.
Job = Callable[[datetime, str, str], dict[str, Any]]


def seal_audit(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Seal yesterday's (UTC) audit trail of a tenant: one digest over all its records.

    The seal is itself an append-only record with a fixed key, so running twice seals once;
    each seal names the previous day's digest, chaining the days together.
    """
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    prev_day = (now - timedelta(days=2)).strftime("%Y-%m-%d")
    records = audit.day_records(tenant, day)
    digest = hashlib.sha256("\n".join(h for _, h in records).encode()).hexdigest()
    previous = audit.latest(tenant, f"seal:{prev_day}")
    data = {"day": day, "records": len(records), "digest": digest, "previous_digest": _digest_of(previous)}
    event = AuditEvent(entity=f"seal:{day}", action="audit.sealed", actor=actor, data=data)
    record = audit.build(tenant, event, datetime.fromisoformat(f"{day}T00:00:00+00:00"), None, record_id="seal")
    sealed = audit.put_once(record)
    if sealed:
        count("AuditSeals")
    logger.info("audit sealed", extra={"day": day, "tenant": tenant, "records": len(records), "sealed": sealed})
    return {"day": day, "records": len(records), "sealed": sealed}


def _digest_of(record: Any) -> str | None:
    if record is None:
        return None
    return str(json.loads(record.data).get("digest"))


def auto_receipt(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Receipt for orders paid 10 days ago that the buyer never confirmed (starts the return window)."""
    return orders.auto_receipt(now, tenant=tenant, actor=actor)


def settle(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Frozen commission whose return window (and batch boundary) has passed becomes available."""
    # function-local: cold start (settlement loads the commission engine, which API calls never need)
    from chalicelib.services import settlements

    return settlements.settle(now, tenant=tenant, actor=actor)


def payout_run(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Approved withdrawals are enqueued, one transfer message each."""
    run = payouts.run_tenant(tenant, now, actor)
    return run or {"tenant": tenant, "run": None, "enqueued": 0, "enqueued_fen": 0}


def reconcile_payouts(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Transfers still in flight are queried at WeChat and finished."""
    return payouts.reconcile(now, tenant=tenant)


def redrive_parked(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Stream records parked after repeated failures are replayed, each item's in stream order."""
    return parking.redrive_all(now, tenant=tenant, actor=actor)


def reconcile_payments(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Orders still waiting for WeChat Pay (unpaid after a prepay, refunds in progress) are queried."""
    return orders.reconcile_payments(now, tenant)


def export(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """Exports go on for one invocation's budget; a new message follows while any is left."""
    return exports.run_pending(now, tenant, actor)


JOBS: dict[str, Job] = {
    "seal_audit": seal_audit,
    "auto_receipt": auto_receipt,
    "settle": settle,
    "payout_run": payout_run,
    "reconcile_payouts": reconcile_payouts,
    "reconcile_payments": reconcile_payments,
    "redrive_parked": redrive_parked,
    "export": export,
}
QUEUE = "jobs"


def _job(name: str) -> Job:
    job = JOBS.get(name)
    if job is None:
        raise Missing(f"no job named {name!r}; jobs: {', '.join(sorted(JOBS))}", code="unknown_job")
    return job


def fan_out(name: str, now: datetime | None = None) -> dict[str, Any]:
    """The schedule: one message per tenant on the jobs queue, so each tenant's run is an
    invocation of its own with its own progress, and one tenant's backlog never starves another."""
    # function-local: cold start (the queue sender stays out of import app)
    from chalicelib.store import queue

    _job(name)
    moment = now or utcnow()
    tenants = [t.id for t in get_store().tenants.all()]
    queue.send_batch(QUEUE, [{"job": name, "tenant": t, "at": iso(moment)} for t in tenants])
    logger.info("job fanned out", extra={"job": name, "tenants": len(tenants)})
    return {"job": name, "tenants": len(tenants)}


def run_for_tenant(name: str, tenant: str, *, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Run the job `name` for one tenant (a queued run, or an operator's "run now").

    Each run counts `JobSucceeded` or `JobFailed` with a `job` dimension: the dashboard shows each
    job's last success age from it, and an alarm fires when a job fails or stops succeeding
    (no `JobSucceeded` in twice its period, missing data breaching: infra/dashboard.py).
    """
    job = _job(name)
    try:
        summary = job(now or utcnow(), tenant, actor)
    except Exception:
        count("JobFailed", job=name)
        raise
    count("JobSucceeded", job=name)
    return summary


def run_now(principal: Principal, name: str) -> dict[str, Any]:
    """An owner's "run now": the job acts on the owner's tenant only and is audited with the owner
    as actor (the schedule's runs are audited by the jobs themselves, as `system:<job>`)."""
    # function-local: cold start (the audit store loads PynamoDB)
    from chalicelib.store import audit

    require_role(principal, Role.OWNER)
    _job(name)
    now = utcnow()
    summary = run_for_tenant(name, principal.tenant, actor=principal.actor, now=now)
    data = {"job": name, "summary": summary}
    event = AuditEvent(
        entity=f"job_run:{name}:{secrets.token_hex(6)}", action="job.run", actor=principal.actor, data=data
    )
    audit.put_once(audit.build(principal.tenant, event, now, None))
    logger.info("job run by an operator", extra={"job": name, "tenant": principal.tenant, "at": iso(now)})
    return summary
