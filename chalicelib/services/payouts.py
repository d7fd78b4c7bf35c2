"""Payouts: approved withdrawals become WeChat merchant transfer bills and are seen through to the end.

* The payout run (schedule) pages through approved withdrawals and enqueues one message each;
  it changes nothing itself, so a second or overlapping run only duplicates messages.
* The queue worker moves a withdrawal approved → sending (conditional: one worker wins a
  duplicate message) and creates the bill with `out_bill_no` = the withdrawal id, so a retry
  is the same bill at WeChat and one withdrawal can never be paid twice. When a withdrawal is
  already `sending` (a crash or an unclear answer before), the bill is queried first and only
  created if WeChat has none.
* Callbacks and the reconciliation schedule record WeChat's state: success → paid; fail or
  cancelled → failed, with the money back in available, in the same transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib import settlement
from chalicelib.auth import require_role
from chalicelib.clock import iso, parse_iso, utcnow
from chalicelib.entities import AuditEvent, Principal
from chalicelib.errors import Conflict, DomainError, NotFound, UpstreamError
from chalicelib.observability import count, gauge, logger
from chalicelib.services import tenants
from chalicelib.services.withdrawals import READERS, get_own, view
from chalicelib.settlement import FINAL, IN_FLIGHT, Withdrawal, WithdrawalState
from chalicelib.store import get_store
from chalicelib.wechat import get_transfer

if TYPE_CHECKING:
    from chalicelib.wechat.transfer import TransferBill

QUEUE = "payouts"
PAGE = 500
STALE_SENDING = timedelta(minutes=10)  # a worker may still be waiting for WeChat before this
REMARK = "佣金提现"
MAX_FAILURES_SHOWN = 100


class PayoutUnclear(Exception):
    """WeChat's answer was unclear: the message is retried (and queries the bill first)."""


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
        extra = {"run_id": run_id, "run_key": f"{tenant}#{run_id}", "attempts": w.attempts + 1, "sent_at": iso(now)}
        fresh = store.withdrawals.move(w, WithdrawalState.SENDING, event, now, extra=extra)
        w = store.withdrawals.get(tenant, withdrawal_id) or w
    if w.state is not WithdrawalState.SENDING:
        return w.state.value  # a duplicate message, or cancelled/rejected meanwhile
    return transfer(w, fresh=fresh).state.value


def transfer(w: Withdrawal, *, fresh: bool) -> Withdrawal:
    """Create the bill of a withdrawal in `sending`; unless this call just moved it there, ask
    WeChat first whether the bill exists (never a new bill for a withdrawal WeChat knows)."""
    from chalicelib.wechat.transfer import TransferRejected, TransferUnclear

    provider = get_transfer(w.tenant)
    try:
        if not fresh:
            known = provider.query_bill(w.id)
            if known is not None:
                return record(w.tenant, known, "query")
        bill = provider.create_bill(
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
    except DomainError as exc:  # a bill WeChat would refuse (checked before any call): never sendable
        count("PayoutsRejected")
        logger.error("withdrawal cannot be sent", extra={"withdrawal": w.id, "code": exc.code})
        return _fail(w, f"{exc.code}: {exc.message}"[:200])
    count("PayoutsSent")
    count("PayoutsSentFen", w.net_fen)
    return record(w.tenant, bill, "transfer")


def _refused(w: Withdrawal, reason: str) -> Withdrawal:
    """WeChat refused the bill. Before the money goes back, make sure WeChat holds no bill under
    this out_bill_no (a refusal of a repeated request must never let the money be paid twice)."""
    from chalicelib.wechat.transfer import TransferUnclear

    try:
        known = get_transfer(w.tenant).query_bill(w.id)
    except TransferUnclear as exc:
        raise PayoutUnclear(str(exc)) from exc
    if known is not None:
        return record(w.tenant, known, "query")
    return _fail(w, reason)


def _fail(w: Withdrawal, reason: str) -> Withdrawal:
    """WeChat refused to create the bill: the withdrawal fails and the money returns."""
    store = get_store()
    target = WithdrawalState.FAILED
    event = AuditEvent(
        entity=f"withdrawal:{w.id}", action="withdrawal.failed", actor="system:payout", data={"reason": reason}
    )
    if store.withdrawals.move(
        w,
        target,
        event,
        utcnow(),
        account=settlement.account_moves(target, w.amount_fen),
        extra={"fail_reason": reason, "real_name": None},
    ):
        count("PayoutsFailed")
        count("PayoutsFailedFen", w.net_fen)
    return store.withdrawals.get(w.tenant, w.id) or w


# --- WeChat's answers: worker, callback, reconciliation ---------------------------------------


def record(tenant: str, bill: TransferBill, source: str, actor: str | None = None) -> Withdrawal:
    """Record a bill's state from WeChat on its withdrawal (repeats and stale answers are harmless:
    final states never move; a final answer contradicting ours is counted and logged, not applied)."""
    store = get_store()
    for _ in range(8):
        w = store.withdrawals.get(tenant, bill.out_bill_no)
        if w is None:
            raise NotFound("unknown withdrawal", code="unknown_withdrawal")
        _check_agrees(w, bill)
        target = settlement.provider_target(bill.state)
        news = bill.state != w.provider_state or (bill.package_info or None) != w.package_info
        if w.state not in IN_FLIGHT or (target is w.state and not news):
            return w  # finished, not sent by us yet, or nothing new
        event, moves, extra = _provider_change(w, bill, target, source, actor or f"system:{source}")
        if store.withdrawals.move(w, target, event, utcnow(), account=moves, extra=extra):
            _count_outcome(target, w.net_fen)
            logger.info("payout state", extra={"withdrawal": w.id, "to": target.value, "source": source})
            return store.withdrawals.get(tenant, w.id) or w
    raise Conflict("the withdrawal keeps changing; try again", code="busy")


def _check_agrees(w: Withdrawal, bill: TransferBill) -> None:
    """Count and log what WeChat says that contradicts our records (never applied silently)."""
    target = settlement.provider_target(bill.state)
    if bill.amount_fen is not None and bill.amount_fen != w.net_fen:
        count("ReconciliationMismatches")
        logger.error("transfer amount differs", extra={"withdrawal": w.id, "bill_fen": bill.amount_fen})
    if w.final and target in FINAL and target is not w.state:
        count("ReconciliationMismatches")
        logger.error(
            "WeChat disagrees with a finished withdrawal",
            extra={"withdrawal": w.id, "ours": w.state.value, "wechat": bill.state},
        )


def _provider_change(
    w: Withdrawal, bill: TransferBill, target: WithdrawalState, source: str, actor: str
) -> tuple[AuditEvent, dict[str, int], dict[str, Any]]:
    """(audit event, account deltas, item changes) of recording a bill's state."""
    extra: dict[str, Any] = {
        "provider_state": bill.state,
        "package_info": bill.package_info if target is WithdrawalState.WAIT_USER_CONFIRM else None,
    }
    data: dict[str, Any] = {"provider_state": bill.state, "bill_no": bill.transfer_bill_no, "source": source}
    if bill.transfer_bill_no:
        extra["bill_no"] = bill.transfer_bill_no
    if bill.fail_reason:
        extra["fail_reason"] = data["fail_reason"] = bill.fail_reason
    if target in FINAL:
        extra["real_name"] = None  # needed only to send the bill
    event = AuditEvent(entity=f"withdrawal:{w.id}", action=f"withdrawal.{target.value}", actor=actor, data=data)
    moves = settlement.account_moves(target, w.amount_fen) if target in FINAL else {}
    return event, moves, extra


def _count_outcome(target: WithdrawalState, net_fen: int) -> None:
    if target is WithdrawalState.PAID:
        count("PayoutsSucceeded")
        count("PayoutsSucceededFen", net_fen)
    elif target is WithdrawalState.FAILED:
        count("PayoutsFailed")
        count("PayoutsFailedFen", net_fen)


def transfer_notification(appid: str | None, headers: Mapping[str, str], body: bytes | str) -> dict[str, str]:
    """WeChat's MCHTRANSFER.BILL.FINISHED callback: verified, decrypted, recorded (repeats harmless)."""
    tenant = tenants.resolve(appid)
    bill = get_transfer(tenant.id).parse_notification(headers, body)
    record(tenant.id, bill, "callback")
    return {"code": "SUCCESS", "message": "成功"}


def reconcile(now: datetime) -> dict[str, Any]:
    """Query WeChat for every withdrawal in flight and record what it says.

    A withdrawal still `sending` after STALE_SENDING whose bill WeChat does not know is sent
    again with the same out_bill_no; an unclear answer leaves it for the next run.
    """
    store = get_store()
    tally = {"checked": 0, "corrected": 0, "resent": 0, "unclear": 0, "errors": 0}
    oldest = 0.0
    for tenant in store.tenants.all():
        for state in (WithdrawalState.SENDING, WithdrawalState.PROCESSING, WithdrawalState.WAIT_USER_CONFIRM):
            for page in store.withdrawals.ids_in_state(tenant.id, state, 100):
                for row in page:
                    age = now - parse_iso(row["updated_at"])
                    oldest = max(oldest, age.total_seconds())
                    if state is WithdrawalState.SENDING and age < STALE_SENDING:
                        continue  # a worker may still be waiting for WeChat's answer
                    try:
                        outcome = _reconcile_one(tenant.id, row["id"], state)
                    except Exception:  # one broken withdrawal must not stop the others
                        logger.exception("reconciliation failed", extra={"withdrawal": row["id"]})
                        count("ReconciliationErrors")
                        tally["errors"] += 1
                        continue
                    if outcome:
                        tally["checked"] += 1
                        if outcome != "checked":
                            tally[outcome] += 1
    if tally["corrected"]:
        count("ReconciliationMismatches", tally["corrected"])
    gauge("PayoutInFlightOldestSeconds", oldest)
    summary: dict[str, Any] = {**tally, "oldest_in_flight_seconds": int(oldest)}
    logger.info("payouts reconciled", extra=summary)
    return summary


def _reconcile_one(tenant: str, withdrawal_id: str, state: WithdrawalState) -> str | None:
    """Query one bill and record it: 'checked', 'corrected', 'resent', 'unclear', or None (moved on)."""
    from chalicelib.wechat.transfer import TransferUnclear

    w = get_store().withdrawals.get(tenant, withdrawal_id)
    if w is None or w.state is not state:
        return None
    try:
        bill = get_transfer(tenant).query_bill(w.id)
        if bill is None:
            if w.state is WithdrawalState.SENDING:
                transfer(w, fresh=True)  # WeChat never got it: the same out_bill_no again
                return "resent"
            count("ReconciliationMismatches")
            logger.error("WeChat does not know a bill in flight", extra={"withdrawal": w.id})
            return "checked"
    except (TransferUnclear, PayoutUnclear):
        return "unclear"
    after = record(tenant, bill, "reconcile")
    changed = after.state is not w.state or after.provider_state != w.provider_state
    return "corrected" if changed else "checked"


# --- the mini-program's and the operator's side ----------------------------------------------


def cancel(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    """The promoter takes a withdrawal back: before it is sent the money simply returns; while the
    transfer waits for their confirmation in WeChat, the bill is cancelled at WeChat first."""
    from chalicelib.services import withdrawals
    from chalicelib.wechat.transfer import TransferRejected, TransferUnclear

    w = get_own(principal, withdrawal_id)
    if w.state is not WithdrawalState.WAIT_USER_CONFIRM:
        return withdrawals.cancel(principal, withdrawal_id)
    try:
        bill = get_transfer(principal.tenant).cancel_bill(w.id)
    except TransferUnclear as exc:
        raise UpstreamError("WeChat did not answer; try again", code="wechatpay_unavailable") from exc
    except TransferRejected as exc:
        raise Conflict(f"WeChat refused to cancel the transfer ({exc.code})", code="not_cancellable") from exc
    return view(record(principal.tenant, bill, "cancel", principal.actor))


def confirmation(principal: Principal, withdrawal_id: str) -> dict[str, str]:
    """What `wx.requestMerchantTransfer` needs while the transfer waits for the user."""
    w = get_own(principal, withdrawal_id)
    if w.state is not WithdrawalState.WAIT_USER_CONFIRM or not w.package_info:
        raise Conflict(
            f"the withdrawal is {w.state.value}, not waiting for your confirmation",
            code="not_waiting_for_confirmation",
            details={"state": w.state.value},
        )
    provider = get_transfer(principal.tenant)
    return {"package_info": w.package_info, "mch_id": provider.mch_id, "appid": provider.appid}


def sandbox_user_confirm(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    """Sandbox only: the user confirms in WeChat; the twin's callbacks go through the real handler."""
    from chalicelib.wechat.transfer import SandboxTransfer

    w = get_own(principal, withdrawal_id)
    provider = get_transfer(principal.tenant)
    if not isinstance(provider, SandboxTransfer):
        raise NotFound("not available", code="not_found")
    for headers, body in provider.user_confirm(w.id):
        transfer_notification(principal.tenant, headers, body)
    return view(get_own(principal, withdrawal_id))


def runs(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    require_role(principal, *READERS)
    page = get_store().withdrawals.runs(principal.tenant, cursor, limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


def run_report(principal: Principal, run_id: str) -> dict[str, Any]:
    """A payout run: what it enqueued, then counts and sums by state and the failures with reasons."""
    require_role(principal, *READERS)
    store = get_store()
    run = store.withdrawals.run(principal.tenant, run_id)
    if run is None:
        raise NotFound("no such payout run", code="unknown_run")
    by_state: dict[str, dict[str, int]] = {}
    failures: list[dict[str, Any]] = []
    failed_total = 0
    for row in store.withdrawals.of_run(principal.tenant, run_id):
        bucket = by_state.setdefault(row["state"], {"count": 0, "amount_fen": 0, "net_fen": 0})
        bucket["count"] += 1
        bucket["amount_fen"] += row["amount_fen"]
        bucket["net_fen"] += row["amount_fen"] - row["fee_fen"]
        if row["state"] == WithdrawalState.FAILED.value:
            failed_total += 1
            if len(failures) < MAX_FAILURES_SHOWN:
                failures.append({"id": row["id"], "amount_fen": row["amount_fen"], "reason": row["fail_reason"]})
    sent = sum(b["count"] for b in by_state.values())
    return {
        **run,
        "sent": sent,
        "not_sent_yet": max(0, run["enqueued"] - sent),
        "by_state": by_state,
        "failures": failures,
        "failures_total": failed_total,
    }
