"""Payouts: approved withdrawals become WeChat merchant transfer bills and are seen through to the end.

* The payout run (schedule) pages through approved withdrawals and enqueues one message each;
  it changes nothing itself, so a second or overlapping run only duplicates messages.
* The queue worker moves a withdrawal approved → sending (conditional: one worker wins a
  duplicate message) and creates the bill with `out_bill_no` = the withdrawal id, so a retry
  is the same bill at WeChat and one withdrawal can never be paid twice. When a withdrawal is
  already `sending` (a crash or an unclear answer before), the bill is queried first and only
  created again if WeChat has none. Every create call is recorded on the withdrawal (time,
  attempt) before it is made.
* Callbacks and the reconciliation schedule record WeChat's state: success → paid; fail or
  cancelled → failed, with the money back in available, in the same transaction. An answer
  with another amount, payee or final state than ours is never applied: it is counted
  (`ReconciliationMismatches`), logged as an error and refused (a callback gets 409, so WeChat
  notifies again and the operator sees it).

When the money goes back without WeChat's final word (NOT_FOUND: `withdrawal.after_not_found`)
------------------------------------------------------------------------------------------------
A refused create (even "duplicate out_bill_no") or an unclear one proves nothing: another create
of the same bill may still be on its way, and a query may not see it yet. So a NOT_FOUND answer
is only noted (audited, counted on the withdrawal) and the withdrawal stays `sending`; the
reconciliation job asks again. The money returns only on WeChat's final FAIL/CANCELLED, or when
NOT_FOUND was answered to at least NOT_FOUND_QUERIES queries, the last one more than
NOT_FOUND_WINDOW (30 min) after the last create attempt. That is safe because:

* WeChat dedupes bills by out_bill_no, and we never issue another out_bill_no for a withdrawal:
  all create calls of one withdrawal make at most one bill;
* every create call is recorded before it is made, in a write conditional on the withdrawal's
  version, and no call outlives its Lambda (minutes): a bill WeChat does not show 30 minutes
  after the last recorded call cannot appear any more;
* giving up is itself a conditional move: a create recorded meanwhile makes it fail, and a
  failed withdrawal is never sent again.

A withdrawal whose bill WeChat showed before (processing, waiting for the user) and then does
not find is a contradiction, not an absence: it is counted and left for an operator.

What people do (cancel, confirm, read runs) is `services.withdrawals`, which calls `record` and
`release_day` here; this module never imports it.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib import observability, withdrawal
from chalicelib.clock import iso, parse_iso, utcnow
from chalicelib.entities import AuditEvent
from chalicelib.errors import DomainError, Missing, StateConflict
from chalicelib.observability import gauge, logger
from chalicelib.retry import Retry
from chalicelib.services import tenants
from chalicelib.store import get_store
from chalicelib.wechat import get_transfer
from chalicelib.wechat.transfer import TransferRejected, TransferUnclear
from chalicelib.withdrawal import FINAL, BillNotFound, Withdrawal, WithdrawalState

if TYPE_CHECKING:
    from chalicelib.wechat.transfer import TransferBill

QUEUE = "payouts"
PAGE = 500
STALE_SENDING = timedelta(minutes=10)  # a worker may still be waiting for WeChat before this
REMARK = "佣金提现"
MISMATCH = "transfer_mismatch"  # the code of a WeChat answer that contradicts the withdrawal
RECONCILE_MAX_PER_RUN = 1000  # bill queries per reconciliation run (the oldest first; the rest next run)
RECONCILE_WORKERS = 8  # queries in parallel (WeChat allows 100 QPS per merchant)
RECONCILE_PAGE = 100
ANSWERS = Retry.at_once(8)  # recording WeChat's answer while workers and callbacks move the same withdrawal


_METRICS = threading.Lock()


def count(name: str, value: int = 1) -> None:
    """Powertools' metric set is not thread-safe (two first counts of a name race and one is
    lost), and reconciliation records from a thread pool: count one at a time."""
    with _METRICS:
        observability.count(name, value)


class PayoutUnclear(Exception):
    """WeChat's answer was unclear: the message is retried (and queries the bill first)."""


def release_day(w: Withdrawal, target: WithdrawalState, now: datetime) -> str | None:
    """The tenant's day whose limits `w` stops counting towards when it reaches `target` at `now`
    (the day it was requested on, if it ends unpaid that same day), or None."""
    timezone = tenants.get(w.tenant).timezone
    requested = withdrawal.local_day(w.created_at, timezone)
    return requested if withdrawal.gives_back_day(target, requested, withdrawal.local_day(now, timezone)) else None


# --- the run ---------------------------------------------------------------------------------


def new_run_id(now: datetime) -> str:
    return "R" + now.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


def payout_run(now: datetime, actor: str = "system:payout_run") -> dict[str, Any]:
    """Enqueue every approved withdrawal of every tenant, page by page (flat memory)."""
    runs = [run for tenant in get_store().tenants.all() if (run := run_tenant(tenant.id, now, actor))]
    total = sum(r["enqueued"] for r in runs)
    count("PayoutsEnqueued", total)
    logger.info("payout run", extra={"enqueued": total, "runs": len(runs)})
    return {"runs": runs, "enqueued": total, "enqueued_fen": sum(r["enqueued_fen"] for r in runs)}


def run_tenant(tenant: str, now: datetime, actor: str) -> dict[str, Any] | None:
    """One tenant's payout run: a run record with its progress, one message per approved
    withdrawal, an audit record at the end; None when nothing was approved."""
    # function-local: cold start (the audit store loads PynamoDB; the queue sender stays out of import app)
    from chalicelib.store import audit, queue

    store = get_store()
    run_id = ""
    enqueued = amount = 0
    for page in store.withdrawals.ids_in_state(tenant, WithdrawalState.APPROVED, PAGE):
        if not run_id:
            run_id = new_run_id(now)
            store.withdrawals.start_run(tenant, run_id, now, actor)
        queue.send_batch(QUEUE, [{"tenant": tenant, "withdrawal": row["id"], "run": run_id} for row in page])
        fen = sum(row["amount_fen"] for row in page)
        store.withdrawals.run_progress(tenant, run_id, len(page), fen)
        enqueued += len(page)
        amount += fen
    if not run_id:
        return None
    store.withdrawals.finish_run(tenant, run_id, utcnow())
    data = {"enqueued": enqueued, "enqueued_fen": amount}
    event = AuditEvent(entity=f"payout_run:{run_id}", action="payout.run", actor=actor, data=data)
    audit.put_once(audit.build(tenant, event, now, None, record_id="run"))
    return {"tenant": tenant, "run": run_id, **data}


# --- the worker ------------------------------------------------------------------------------


def send(tenant: str, withdrawal_id: str, run_id: str) -> str:
    """Send one withdrawal as a transfer bill; returns the state it ended in (for the log).

    Raises PayoutUnclear when WeChat's answer was unclear, so the message is retried.
    """
    store = get_store()
    w = store.withdrawals.get(tenant, withdrawal_id)
    if w is None:
        logger.warning("payout message for an unknown withdrawal", extra={"withdrawal": withdrawal_id})
        return "unknown"
    fresh = False
    if w.state is WithdrawalState.APPROVED:
        now = utcnow()
        data = {"run": run_id, "attempt": w.attempts + 1}
        event = AuditEvent(entity=f"withdrawal:{w.id}", action="withdrawal.sending", actor="system:payout", data=data)
        extra = {
            "run_id": run_id,
            "run_key": f"{tenant}#{run_id}",
            "attempts": w.attempts + 1,
            "sent_at": iso(now),
            "create_at": iso(now),
        }
        fresh = store.withdrawals.move(w, WithdrawalState.SENDING, event, now, extra=extra)
        w = store.withdrawals.get(tenant, withdrawal_id) or w
    if w.state is not WithdrawalState.SENDING:
        return w.state.value  # a duplicate message, or cancelled/rejected meanwhile
    try:
        return transfer(w, fresh=fresh).state.value
    except StateConflict as exc:
        if exc.code != MISMATCH:
            raise
        return "mismatch"  # counted and logged; reconciliation keeps asking


def transfer(w: Withdrawal, *, fresh: bool) -> Withdrawal:
    """Create the bill of a withdrawal in `sending`; unless this call just moved it there (and
    recorded the create attempt), ask WeChat first whether the bill exists (never a new bill for
    a withdrawal WeChat knows) and decide by `withdrawal.after_not_found` whether to create it."""
    if not fresh:
        try:
            known = get_transfer(w.tenant).query_bill(w.id)
        except TransferUnclear as exc:
            count("PayoutsUnclear")
            raise PayoutUnclear(str(exc)) from exc
        if known is not None:
            return _recorded(w.tenant, known, "query")
        now = utcnow()
        decision = withdrawal.after_not_found(w, now)
        if decision is not BillNotFound.RESEND:
            return _not_found(w, decision, now)
        again = _create_attempt(w, now)
        if again is None:  # moved meanwhile (another worker, a callback): theirs to finish
            return get_store().withdrawals.get(w.tenant, w.id) or w
        w = again
    return _create(w, first=fresh)


def _create_attempt(w: Withdrawal, now: datetime) -> Withdrawal | None:
    """Record a create call about to be made (before it is made: the NOT_FOUND window counts from
    it); None when the withdrawal moved meanwhile, so no call is made."""
    store = get_store()
    attempt = w.attempts + 1
    event = AuditEvent(
        entity=f"withdrawal:{w.id}", action="withdrawal.resending", actor="system:payout", data={"attempt": attempt}
    )
    extra = {"attempts": attempt, "create_at": iso(now), "not_found": None, "refusal": None}
    if not store.withdrawals.move(w, WithdrawalState.SENDING, event, now, extra=extra):
        return None
    return store.withdrawals.get(w.tenant, w.id)


def _create(w: Withdrawal, *, first: bool) -> Withdrawal:
    """The create call itself, its attempt already recorded."""
    try:
        bill = get_transfer(w.tenant).create_bill(
            out_bill_no=w.id, openid=w.openid, amount_fen=w.net_fen, remark=REMARK, user_name=w.real_name
        )
    except TransferUnclear as exc:
        count("PayoutsUnclear")
        logger.warning("unclear transfer answer", extra={"withdrawal": w.id, "error": str(exc)})
        raise PayoutUnclear(str(exc)) from exc
    except TransferRejected as exc:
        count("PayoutsRejected")
        logger.warning("transfer refused", extra={"withdrawal": w.id, "code": exc.code})
        return _refused(w, f"{exc.code}: {exc.message}"[:200])
    except DomainError as exc:  # a bill WeChat would refuse (checked before any call)
        count("PayoutsRejected")
        logger.error("withdrawal cannot be sent", extra={"withdrawal": w.id, "code": exc.code})
        reason = f"{exc.code}: {exc.message}"[:200]
        # never sendable: on the first attempt no call ever reached WeChat, so the money returns at
        # once; after earlier attempts it waits for NOT_FOUND to persist like any refusal
        return _fail(w, reason) if first else _refused(w, reason)
    count("PayoutsSent")
    count("PayoutsSentFen", w.net_fen)
    return record(w.tenant, bill, "transfer")


def _refused(w: Withdrawal, reason: str) -> Withdrawal:
    """WeChat refused the bill. That proves nothing about a create of the same bill still under
    way, so the bill is queried: if WeChat holds it, it is recorded; if not, the NOT_FOUND is only
    noted and the reconciliation job asks again (see the module docstring)."""
    try:
        known = get_transfer(w.tenant).query_bill(w.id)
    except TransferUnclear as exc:
        raise PayoutUnclear(str(exc)) from exc
    if known is not None:
        return _recorded(w.tenant, known, "query")
    refused = replace(w, refusal=reason)
    now = utcnow()
    return _not_found(refused, withdrawal.after_not_found(refused, now), now)


def _not_found(w: Withdrawal, decision: BillNotFound, now: datetime) -> Withdrawal:
    """Act on WeChat's NOT_FOUND for `w`'s bill (`decision` is never RESEND here)."""
    if decision is BillNotFound.ABANDON:
        return _abandon(w)
    if decision is BillNotFound.MISMATCH:
        count("ReconciliationMismatches")
        logger.error("WeChat does not know a bill it showed before", extra={"withdrawal": w.id})
        return w
    store = get_store()
    seen = w.not_found + 1
    data: dict[str, Any] = {"not_found": seen, "refusal": w.refusal}
    event = AuditEvent(
        entity=f"withdrawal:{w.id}", action="withdrawal.bill_not_found", actor="system:payout", data=data
    )
    extra = {"not_found": seen, "refusal": w.refusal}
    store.withdrawals.move(w, WithdrawalState.SENDING, event, utcnow(), extra=extra)
    logger.warning("WeChat does not know the bill (yet)", extra={"withdrawal": w.id, "not_found": seen})
    return store.withdrawals.get(w.tenant, w.id) or w


def _abandon(w: Withdrawal) -> Withdrawal:
    """NOT_FOUND persisted past the window after the last create attempt: the bill can no longer
    appear, so the withdrawal fails and the money returns (counted: an operator should know why)."""
    reason = (w.refusal or "WeChat never received the transfer")[:200]
    data = {"not_found": w.not_found + 1, "last_create_at": iso(w.create_at or w.sent_at or w.updated_at)}
    return _fail(w, reason, data, abandoned=True)


def _fail(w: Withdrawal, reason: str, data: Mapping[str, Any] | None = None, *, abandoned: bool = False) -> Withdrawal:
    """The withdrawal fails without a bill at WeChat: the money returns (and the day's limits, the
    same day)."""
    store = get_store()
    target = WithdrawalState.FAILED
    now = utcnow()
    event = AuditEvent(
        entity=f"withdrawal:{w.id}",
        action="withdrawal.failed",
        actor="system:payout",
        data={"reason": reason, **(data or {})},
    )
    if store.withdrawals.move(
        w,
        target,
        event,
        now,
        account=withdrawal.account_moves(target, w.amount_fen),
        extra={"fail_reason": reason, "real_name": None, "not_found": None},
        release_day=release_day(w, target, now),
    ):
        count("PayoutsFailed")
        count("PayoutsFailedFen", w.net_fen)
        if abandoned:
            count("PayoutsAbandoned")
            count("PayoutsAbandonedFen", w.net_fen)
            logger.error("payout abandoned: WeChat never had the bill", extra={"withdrawal": w.id, "reason": reason})
    return store.withdrawals.get(w.tenant, w.id) or w


# --- WeChat's answers: worker, callback, reconciliation ---------------------------------------


def record(tenant: str, bill: TransferBill, source: str, actor: str | None = None) -> Withdrawal:
    """Record a bill's state from WeChat on its withdrawal (repeats and stale answers are harmless:
    final states never move). An answer contradicting ours (another amount, payee or final state)
    is counted and logged, never applied: StateConflict `transfer_mismatch`."""
    store = get_store()
    for _ in ANSWERS:
        w = store.withdrawals.get(tenant, bill.out_bill_no)
        if w is None:
            raise Missing("unknown withdrawal", code="unknown_withdrawal")
        target = withdrawal.provider_target(bill.state)
        _refuse_disagreement(w, bill, target, source)
        package = _package(w, bill, target)
        news = bill.state != w.provider_state or package != w.package_info
        if not withdrawal.provider_may_move(w.state, target, news=news, recorded=w.provider_state, answered=bill.state):
            return w  # finished, not sent by us yet, a stale answer, or nothing new
        event, moves, extra = _provider_change(w, bill, target, package, source, actor or f"system:{source}")
        now = utcnow()
        if store.withdrawals.move(
            w, target, event, now, account=moves, extra=extra, release_day=release_day(w, target, now)
        ):
            _count_outcome(target, w.net_fen)
            logger.info("payout state", extra={"withdrawal": w.id, "to": target.value, "source": source})
            return store.withdrawals.get(tenant, w.id) or w
    raise StateConflict("the withdrawal keeps changing; try again", code="busy")


def _recorded(tenant: str, bill: TransferBill, source: str) -> Withdrawal:
    """Record a query answer. Only WeChat's create answer carries package_info: for a bill waiting
    for the user whose create answer was lost, the same create call is made again (WeChat answers
    a repeated out_bill_no with the same bill, package included; no second bill can exist)."""
    after = record(tenant, bill, source)
    if after.state is not WithdrawalState.WAIT_USER_CONFIRM or after.package_info:
        return after
    try:
        again = get_transfer(tenant).create_bill(
            out_bill_no=after.id,
            openid=after.openid,
            amount_fen=after.net_fen,
            remark=REMARK,
            user_name=after.real_name,
        )
    except (TransferUnclear, TransferRejected, DomainError) as exc:
        count("PayoutsWithoutPackage")
        logger.warning(
            "no package_info for a transfer waiting for the user", extra={"withdrawal": after.id, "error": str(exc)}
        )
        return after
    return record(tenant, again, "transfer")


def _refuse_disagreement(w: Withdrawal, bill: TransferBill, target: WithdrawalState, source: str) -> None:
    """Count, log and refuse what WeChat says that contradicts our records."""
    problems = withdrawal.bill_disagreements(w, target, bill.amount_fen, bill.openid)
    if not problems:
        return
    count("ReconciliationMismatches")
    details = {
        "withdrawal": w.id,
        "problems": problems,
        "source": source,
        "ours": {"state": w.state.value, "net_fen": w.net_fen},
        "wechat": {"state": bill.state, "amount_fen": bill.amount_fen, "openid_matches": bill.openid == w.openid},
    }
    logger.error("WeChat's transfer contradicts the withdrawal; not applied", extra=details)
    raise StateConflict(
        f"WeChat's transfer bill contradicts the withdrawal ({', '.join(problems)}); nothing was changed",
        code=MISMATCH,
        details={"problems": problems},
    )


def _package(w: Withdrawal, bill: TransferBill, target: WithdrawalState) -> str | None:
    """What `wx.requestMerchantTransfer` needs while the user must confirm: only WeChat's create
    answer carries it (a query answer never does), so the stored one is kept until the state leaves
    WAIT_USER_CONFIRM."""
    if target is not WithdrawalState.WAIT_USER_CONFIRM:
        return None
    return bill.package_info or w.package_info


def _provider_change(
    w: Withdrawal, bill: TransferBill, target: WithdrawalState, package: str | None, source: str, actor: str
) -> tuple[AuditEvent, dict[str, int], dict[str, Any]]:
    """(audit event, account deltas, item changes) of recording a bill's state."""
    extra: dict[str, Any] = {"provider_state": bill.state, "package_info": package, "not_found": None}
    data: dict[str, Any] = {"provider_state": bill.state, "bill_no": bill.transfer_bill_no, "source": source}
    if bill.transfer_bill_no:
        extra["bill_no"] = bill.transfer_bill_no
    if bill.fail_reason:
        extra["fail_reason"] = data["fail_reason"] = bill.fail_reason
    if target in FINAL:
        extra["real_name"] = None  # needed only to send the bill
    event = AuditEvent(entity=f"withdrawal:{w.id}", action=f"withdrawal.{target.value}", actor=actor, data=data)
    moves = withdrawal.account_moves(target, w.amount_fen) if target in FINAL else {}
    return event, moves, extra


def _count_outcome(target: WithdrawalState, net_fen: int) -> None:
    if target is WithdrawalState.PAID:
        count("PayoutsSucceeded")
        count("PayoutsSucceededFen", net_fen)
    elif target is WithdrawalState.FAILED:
        count("PayoutsFailed")
        count("PayoutsFailedFen", net_fen)


def transfer_notification(appid: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, str]:
    """WeChat's MCHTRANSFER.BILL.FINISHED callback: verified, decrypted, recorded (repeats harmless)."""
    tenant = tenants.get(appid)  # from the notify URL's path: never a default tenant
    bill = get_transfer(tenant.id).parse_notification(headers, body)
    record(tenant.id, bill, "callback")
    return {"code": "SUCCESS", "message": "成功"}


def reconcile(now: datetime, tenant: str | None = None) -> dict[str, Any]:
    """Query WeChat for the withdrawals in flight, oldest first, at most RECONCILE_MAX_PER_RUN per
    run and RECONCILE_WORKERS at a time, and record what it says.

    A withdrawal still `sending` after STALE_SENDING is due too: WeChat's NOT_FOUND then sends it
    again (same out_bill_no), or is noted, or gives the money back (`withdrawal.after_not_found`).
    An unclear answer leaves it for the next run; so do the withdrawals beyond the bound (`deferred`).
    """
    due, seen, oldest = _due(now, [tenant] if tenant else [t.id for t in get_store().tenants.all()])
    chosen = list(itertools.islice(heapq.merge(*due, key=lambda row: row[0]), RECONCILE_MAX_PER_RUN))
    tally = dict.fromkeys(
        ("checked", "corrected", "resent", "unclear", "errors", "mismatches", "waiting", "abandoned"), 0
    )
    with ThreadPoolExecutor(max_workers=RECONCILE_WORKERS) as pool:
        outcomes = list(pool.map(lambda row: _reconcile_safely(row[1], row[2], row[3], now), chosen))
    for outcome in outcomes:
        if outcome:
            tally["checked"] += outcome != "errors"
            if outcome != "checked":
                tally[outcome] += 1
    if tally["corrected"]:
        count("ReconciliationCorrections", tally["corrected"])
    deferred = seen - len(chosen)
    if deferred:
        count("ReconciliationDeferred", deferred)
    gauge("PayoutInFlightOldestSeconds", oldest)
    summary: dict[str, Any] = {
        **tally,
        "due": seen,
        "deferred": deferred,
        "oldest_in_flight_seconds": int(oldest),
    }
    logger.info("payouts reconciled", extra=summary)
    return summary


def _due(now: datetime, tenants: list[str]) -> tuple[list[list[tuple[str, str, str, WithdrawalState]]], int, float]:
    """The withdrawals due for a query: per tenant and state the oldest RECONCILE_MAX_PER_RUN
    (created_at, tenant, id, state), oldest first; how many are due in all; the oldest age."""
    store = get_store()
    due: list[list[tuple[str, str, str, WithdrawalState]]] = []
    seen = 0
    oldest = 0.0
    for tenant in tenants:
        for state in (WithdrawalState.SENDING, WithdrawalState.PROCESSING, WithdrawalState.WAIT_USER_CONFIRM):
            rows: list[tuple[str, str, str, WithdrawalState]] = []
            for page in store.withdrawals.ids_in_state(tenant, state, RECONCILE_PAGE):
                for row in page:
                    age = now - parse_iso(row["updated_at"])
                    oldest = max(oldest, age.total_seconds())
                    if state is WithdrawalState.SENDING and age < STALE_SENDING:
                        continue  # a worker may still be waiting for WeChat's answer
                    seen += 1
                    if len(rows) < RECONCILE_MAX_PER_RUN:
                        rows.append((row["created_at"], tenant, row["id"], state))
            due.append(rows)
    return due, seen, oldest


def _reconcile_safely(tenant: str, withdrawal_id: str, state: WithdrawalState, now: datetime) -> str | None:
    try:
        return _reconcile_one(tenant, withdrawal_id, state, now)
    except Exception:  # one broken withdrawal must not stop the others
        logger.exception("reconciliation failed", extra={"withdrawal": withdrawal_id})
        count("ReconciliationErrors")
        return "errors"


_NOT_FOUND_OUTCOMES = {
    BillNotFound.WAIT: "waiting",
    BillNotFound.ABANDON: "abandoned",
    BillNotFound.MISMATCH: "mismatches",
}


def _reconcile_one(tenant: str, withdrawal_id: str, state: WithdrawalState, now: datetime) -> str | None:
    """Query one bill and record it: 'checked', 'corrected', 'resent', 'unclear', 'waiting',
    'abandoned', 'mismatches', or None (moved on meanwhile)."""
    w = get_store().withdrawals.get(tenant, withdrawal_id)
    if w is None or w.state is not state:
        return None
    try:
        bill = get_transfer(tenant).query_bill(w.id)
        if bill is None:
            decision = withdrawal.after_not_found(w, now)
            if decision is BillNotFound.RESEND:
                again = _create_attempt(w, utcnow())
                if again is None:
                    return None  # moved meanwhile
                _create(again, first=False)  # WeChat never got it: the same out_bill_no again
                return "resent"
            _not_found(w, decision, now)
            return _NOT_FOUND_OUTCOMES[decision]
        after = _recorded(tenant, bill, "reconcile")
    except (TransferUnclear, PayoutUnclear):
        return "unclear"
    except StateConflict as exc:
        if exc.code != MISMATCH:
            raise
        return "mismatches"
    changed = after.state is not w.state or after.provider_state != w.provider_state
    return "corrected" if changed else "checked"
