"""Withdrawals (提现): a promoter asks for available commission; finance reviews; the payout run sends.

The request reserves the money (available → withdrawing) with one conditional update of the
account that also checks the day's count and amount limits, so concurrent requests can never
overdraw or exceed a limit. Rejections and cancellations put the money back in the same
transaction that records them; one that ends on the day it was requested also gives that day's
count and amount back (`withdrawal.gives_back_day`, through `payouts.release_day`).

This module is what people do and see: the promoter's requests, cancellations and transfer
confirmations, the operators' review, lists and payout-run reports. Sending and WeChat's answers
are `services.payouts`, which this module calls (to record WeChat's answer to a cancelled bill)
and which never calls back here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from chalicelib import withdrawal
from chalicelib.api.views import admin_withdrawal_view, withdrawal_view
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import InvalidInput, Missing, StateConflict, UpstreamError
from chalicelib.money import format_yuan
from chalicelib.observability import count, logger
from chalicelib.retry import Retry
from chalicelib.services import payouts, tenants
from chalicelib.store import get_store
from chalicelib.wechat import get_transfer
from chalicelib.wechat.transfer import TransferRejected, TransferUnclear
from chalicelib.withdrawal import Withdrawal, WithdrawalRules, WithdrawalState

REVIEWERS = (Role.OWNER, Role.FINANCE)
READERS = (Role.OWNER, Role.FINANCE, Role.OPS, Role.AUDITOR)
MAX_FAILURES_SHOWN = 100  # a payout run's report lists at most this many failures
PERSON_MOVES = Retry.at_once(5)  # approve, reject, cancel: re-read when the withdrawal moved meanwhile


def rules_of(tenant: str) -> WithdrawalRules:
    raw = get_store().withdrawals.rules(tenant)
    if not raw:
        return WithdrawalRules()
    return withdrawal.parse_rules(json.loads(raw))


def new_id(tenant: str, promoter: str, idempotency_key: str | None) -> str:
    """A withdrawal id, also WeChat's out_bill_no ([0-9A-Za-z], ≤ 32). With an idempotency key the
    id is derived from it, so a retried request finds the withdrawal it already created."""
    if idempotency_key:
        digest = hashlib.sha256(f"{tenant}:{promoter}:{idempotency_key}".encode()).hexdigest()
        return "W" + digest[:25]
    return "W" + secrets.token_hex(13)[:25]


def quote(principal: Principal, amount_fen: int) -> dict[str, Any]:
    """What a withdrawal would cost, shown before the user confirms it."""
    tenant = tenants.get(principal.tenant)
    rules = rules_of(tenant.id)
    q = withdrawal.quote(rules, amount_fen)
    available, day, day_count, day_fen = get_store().withdrawals.account_day(tenant.id, principal.subject)
    if day != withdrawal.local_day(utcnow(), tenant.timezone):
        day_count = day_fen = 0
    return {
        "amount_fen": q.amount_fen,
        "fee_fen": q.fee_fen,
        "net_fen": q.net_fen,
        "real_name_required": q.real_name_required,
        "available_fen": available,
        "remaining_today": {
            "count": max(0, rules.count_per_day - day_count),
            "amount_fen": max(0, rules.max_per_day_fen - day_fen),
        },
        "rules": rules.as_dict(),
    }


def request(
    principal: Principal, amount_fen: int, real_name: str | None = None, idempotency_key: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Create a withdrawal, reserving its amount; returns (view, created)."""
    store = get_store()
    tenant = tenants.get(principal.tenant)
    rules = rules_of(tenant.id)
    q = withdrawal.quote(rules, amount_fen)
    if q.real_name_required and not real_name:
        raise InvalidInput(
            f"withdrawals of {format_yuan(rules.real_name_from_fen)} yuan or more need the payee's real name",
            code="real_name_required",
        )
    user = store.users.get(tenant.id, principal.subject)
    if user is None:
        raise Missing("unknown user", code="unknown_user")
    now = utcnow()
    wid = new_id(tenant.id, principal.subject, idempotency_key)
    state = WithdrawalState.APPROVED if q.auto_approved else WithdrawalState.REQUESTED
    requested = Withdrawal(
        tenant=tenant.id,
        id=wid,
        promoter=principal.subject,
        openid=user.openid,
        amount_fen=q.amount_fen,
        fee_fen=q.fee_fen,
        state=state,
        created_at=now,
        updated_at=now,
        real_name=real_name if q.real_name_required else None,
    )
    day = withdrawal.local_day(now, tenant.timezone)
    reservation = _reservation(rules, amount_fen, day)
    data = {"amount_fen": q.amount_fen, "fee_fen": q.fee_fen, "state": state.value, "auto_approved": q.auto_approved}
    event = AuditEvent(entity=f"withdrawal:{wid}", action="withdrawal.requested", actor=principal.actor, data=data)
    outcome = store.withdrawals.create(requested, reservation, event)
    if outcome.exists:
        existing = store.withdrawals.get(tenant.id, wid)
        if existing is None or existing.promoter != principal.subject or existing.amount_fen != amount_fen:
            raise StateConflict("this Idempotency-Key was used for another withdrawal", code="idempotency_key_reused")
        return withdrawal_view(existing), False
    if outcome.refused:
        raise _refusal(tenant.id, principal.subject, rules, amount_fen, day)
    count("WithdrawalsRequested")
    count("WithdrawalsRequestedFen", amount_fen)
    if q.auto_approved:
        count("WithdrawalsAutoApproved")
    logger.info("withdrawal requested", extra={"tenant": tenant.id, "withdrawal": wid, "amount_fen": amount_fen})
    created = store.withdrawals.get(tenant.id, wid)
    return withdrawal_view(created or requested), True


def _reservation(rules: WithdrawalRules, amount_fen: int, day: str) -> Any:
    # function-local: cold start (the withdrawals store loads PynamoDB)
    from chalicelib.store.withdrawals import Reservation

    return Reservation(
        amount_fen=amount_fen,
        moves=withdrawal.reserve_moves(amount_fen),
        day=day,
        count_per_day=rules.count_per_day,
        max_per_day_fen=rules.max_per_day_fen,
    )


def _refusal(tenant: str, promoter: str, rules: WithdrawalRules, amount_fen: int, day: str) -> StateConflict:
    """Why the reservation was refused (read after the fact: the write decided, this explains)."""
    available, wd_day, day_count, day_fen = get_store().withdrawals.account_day(tenant, promoter)
    if available < 0:
        return StateConflict(
            f"your balance is {format_yuan(available)} yuan after a refund of commission already withdrawn; "
            "withdrawals resume once new earnings cover it",
            code="negative_balance",
        )
    if available < amount_fen:
        return StateConflict(f"only {format_yuan(available)} yuan is available", code="insufficient_balance")
    if wd_day == day and day_count >= rules.count_per_day:
        return StateConflict(f"at most {rules.count_per_day} withdrawals a day", code="daily_count_exceeded")
    if wd_day == day and day_fen + amount_fen > rules.max_per_day_fen:
        left = max(0, rules.max_per_day_fen - day_fen)
        return StateConflict(f"only {format_yuan(left)} yuan more can be withdrawn today", code="daily_amount_exceeded")
    return StateConflict("the balance changed meanwhile; try again", code="busy")


def mine(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    """The caller's withdrawals, newest first: each row has the fields of `GET /v1/withdrawals/{id}`."""
    store = get_store()
    page = store.withdrawals.by_promoter(principal.tenant, principal.subject, cursor, limit)
    rows = store.withdrawals.get_many(principal.tenant, [row["id"] for row in page.items])
    return {"items": [withdrawal_view(w) for w in rows], "next_cursor": page.next_cursor}


def get_own(principal: Principal, withdrawal_id: str) -> Withdrawal:
    w = get_store().withdrawals.get(principal.tenant, withdrawal_id)
    if w is None or w.promoter != principal.subject:
        raise Missing("withdrawal not found", code="unknown_withdrawal")
    return w


def get_any(principal: Principal, withdrawal_id: str) -> Withdrawal:
    require_role(principal, *READERS)
    w = get_store().withdrawals.get(principal.tenant, withdrawal_id)
    if w is None:
        raise Missing("withdrawal not found", code="unknown_withdrawal")
    return w


def cancel(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    """The promoter takes back a withdrawal not yet sent; the money returns to available."""
    w = get_own(principal, withdrawal_id)
    return withdrawal_view(_act(w, "cancel", principal.actor, {}))


def take_back(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    """The promoter takes a withdrawal back (the cancel route): before it is sent the money simply
    returns (`cancel`); while the transfer waits for their confirmation in WeChat, the bill is
    cancelled at WeChat first and WeChat's answer recorded (`payouts.record`)."""
    w = get_own(principal, withdrawal_id)
    if w.state is not WithdrawalState.WAIT_USER_CONFIRM:
        return cancel(principal, withdrawal_id)
    try:
        bill = get_transfer(principal.tenant).cancel_bill(w.id)
    except TransferUnclear as exc:
        raise UpstreamError("WeChat did not answer; try again", code="wechatpay_unavailable") from exc
    except TransferRejected as exc:
        raise StateConflict(f"WeChat refused to cancel the transfer ({exc.code})", code="not_cancellable") from exc
    return withdrawal_view(payouts.record(principal.tenant, bill, "cancel", principal.actor))


def confirmation(principal: Principal, withdrawal_id: str) -> dict[str, str]:
    """What `wx.requestMerchantTransfer` needs while the transfer waits for the user."""
    w = get_own(principal, withdrawal_id)
    if w.state is not WithdrawalState.WAIT_USER_CONFIRM or not w.package_info:
        raise StateConflict(
            f"the withdrawal is {w.state.value}, not waiting for your confirmation",
            code="not_waiting_for_confirmation",
            details={"state": w.state.value},
        )
    provider = get_transfer(principal.tenant)
    return {"package_info": w.package_info, "mch_id": provider.mch_id, "appid": provider.appid}


def sandbox_user_confirm(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    """Sandbox only: the user confirms in WeChat; the transfer twin POSTs its callbacks to the
    notify_url the bill was created with (never calling the handler)."""
    # function-local: cold start (the sandbox twin loads the pay client and cryptography)
    from chalicelib.wechat.transfer.sandbox import SandboxTransfer

    w = get_own(principal, withdrawal_id)
    provider = get_transfer(principal.tenant)
    if not isinstance(provider, SandboxTransfer):
        raise Missing("not available", code="not_found")
    provider.user_confirm(w.id)
    return withdrawal_view(get_own(principal, withdrawal_id))


def approve(principal: Principal, withdrawal_id: str) -> dict[str, Any]:
    require_role(principal, *REVIEWERS)
    w = _admin_get(principal, withdrawal_id)
    moved = _act(w, "approve", principal.actor, {})
    count("WithdrawalsApproved")
    return admin_withdrawal_view(moved)


def reject(principal: Principal, withdrawal_id: str, reason: str) -> dict[str, Any]:
    require_role(principal, *REVIEWERS)
    w = _admin_get(principal, withdrawal_id)
    moved = _act(w, "reject", principal.actor, {"reason": reason}, extra={"reason": reason})
    count("WithdrawalsRejected")
    return admin_withdrawal_view(moved)


def _admin_get(principal: Principal, withdrawal_id: str) -> Withdrawal:
    w = get_store().withdrawals.get(principal.tenant, withdrawal_id)
    if w is None:
        raise Missing("withdrawal not found", code="unknown_withdrawal")
    return w


def _act(
    w: Withdrawal, action: str, actor: str, data: dict[str, Any], *, extra: dict[str, Any] | None = None
) -> Withdrawal:
    """A person's move of a withdrawal (approve, reject, cancel), retried if the item moved meanwhile."""
    store = get_store()
    for _ in PERSON_MOVES:
        target = withdrawal.TRANSITIONS[action].get(w.state)
        if target is None:
            raise StateConflict(
                f"the withdrawal is {w.state.value}", code="invalid_state", details={"state": w.state.value}
            )
        now = utcnow()
        event = AuditEvent(
            entity=f"withdrawal:{w.id}",
            action=f"withdrawal.{target.value}",
            actor=actor,
            data={**data, "from": w.state.value},
        )
        moves = withdrawal.account_moves(target, w.amount_fen)
        changes = {**(extra or {}), **({"real_name": None} if target in withdrawal.FINAL else {})}
        released = payouts.release_day(w, target, now)
        if store.withdrawals.move(w, target, event, now, account=moves, extra=changes, release_day=released):
            logger.info("withdrawal moved", extra={"withdrawal": w.id, "to": target.value, "actor": actor})
            return store.withdrawals.get(w.tenant, w.id) or w
        fresh = store.withdrawals.get(w.tenant, w.id)
        if fresh is None:
            raise Missing("withdrawal not found", code="unknown_withdrawal")
        w = fresh
    raise StateConflict("the withdrawal keeps changing; try again", code="busy")


def admin_list(principal: Principal, state: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
    require_role(principal, *READERS)
    try:
        wanted = WithdrawalState(state or WithdrawalState.REQUESTED.value)
    except ValueError:
        names = ", ".join(s.value for s in WithdrawalState)
        raise InvalidInput(f"state must be one of {names}", code="invalid_state") from None
    store = get_store()
    page = store.withdrawals.by_state(principal.tenant, wanted, cursor, limit)
    rows = store.withdrawals.get_many(principal.tenant, [row["id"] for row in page.items])
    promoters = store.users.names(principal.tenant, [w.promoter for w in rows]) if rows else {}
    # each row has the fields of GET /v1/admin/withdrawals/{id}, and the promoter's display name
    items = [{**admin_withdrawal_view(w), "promoter_name": promoters.get(w.promoter, "")} for w in rows]
    return {"state": wanted.value, "items": items, "next_cursor": page.next_cursor}


def get_rules(principal: Principal) -> dict[str, Any]:
    require_role(principal, *READERS)
    return rules_of(principal.tenant).as_dict()


def set_rules(principal: Principal, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some withdrawal rules (owner or finance); the change is audited."""
    require_role(principal, *REVIEWERS)
    before = rules_of(principal.tenant)
    after = withdrawal.parse_rules(changes, before)
    data = {"before": before.as_dict(), "after": after.as_dict()}
    event = AuditEvent(entity="settings:withdrawals", action="settings.withdrawals", actor=principal.actor, data=data)
    get_store().withdrawals.set_rules(principal.tenant, json.dumps(after.as_dict(), sort_keys=True), event, utcnow())
    return after.as_dict()


# --- payout runs, as operators read them ---------------------------------------------------


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
        raise Missing("no such payout run", code="unknown_run")
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
