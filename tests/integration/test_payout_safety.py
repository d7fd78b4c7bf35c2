"""Payout safety on DynamoDB Local (issue 9, items 3.7, 3.8, 3.10, 3.11, the query answer's
missing package_info and the bounded reconciliation): money goes back only when WeChat cannot
pay any more, contradicting answers are never applied, and ended withdrawals free the day's limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.api import views
from chalicelib.clock import utcnow
from chalicelib.entities import Principal
from chalicelib.errors import StateConflict
from chalicelib.services import payouts, withdrawals
from chalicelib.store import get_store
from chalicelib.store.audit import for_entity, verify_chain
from chalicelib.wechat.transfer import TransferBill, TransferRejected
from chalicelib.wechat.transfer.sandbox import SandboxTransfer
from chalicelib.withdrawal import MAX_CREATE_ATTEMPTS, NOT_FOUND_WINDOW, WithdrawalState
from tests.integration.test_withdrawals import (
    account,
    assert_money_conserved,
    credit,
    pay_out,
    promoter,
    request,
    state_of,
)
from tests.stack import Stack

pytestmark = pytest.mark.integration

LATER = payouts.STALE_SENDING + timedelta(minutes=1)  # due for reconciliation, inside the window
PAST_WINDOW = NOT_FOUND_WINDOW + timedelta(minutes=1)


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every count() of the payouts service, summed by name."""
    seen: dict[str, int] = {}
    real = payouts.count

    def count(name: str, value: int = 1, **dimensions: str) -> None:
        seen[name] = seen.get(name, 0) + value
        real(name, value, **dimensions)

    monkeypatch.setattr(payouts, "count", count)
    return seen


def reconcile_at(delta: timedelta) -> dict[str, Any]:
    return payouts.reconcile(utcnow() + delta)


def actions(stack: Stack, wid: str) -> list[str]:
    records = list(for_entity(stack.tenant, f"withdrawal:{wid}"))
    assert verify_chain(records)
    return [r.action for r in records]


# --- 3.7: a refusal, then NOT_FOUND, is not a reason to return the money ---------------------


def test_a_refusal_while_a_concurrent_create_lands_later_never_pays_twice(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another create of the same bill is under way: WeChat refuses ours as a duplicate and does
    not show the bill yet; moments later the other create lands and the user confirms it."""
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    real_create = SandboxTransfer.create_bill
    landed: list[TransferBill] = []

    def create(self: Any, **kwargs: Any) -> Any:
        raise TransferRejected("INVALID_REQUEST", "商户单号重复")  # the other request holds the number

    monkeypatch.setattr(SandboxTransfer, "create_bill", create)
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.SENDING  # no money back on one NOT_FOUND
    assert account(stack, who)["withdrawing_fen"] == 1_000 and account(stack, who)["available_fen"] == 0
    monkeypatch.setattr(SandboxTransfer, "create_bill", real_create)
    landed.append(
        real_create(sandbox, out_bill_no=w["id"], openid=_openid(stack, w["id"]), amount_fen=1_000, remark="x")
    )
    reconcile_at(LATER)  # the reconciliation job finds the bill and records it
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    withdrawals.sandbox_user_confirm(who, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.PAID
    assert account(stack, who)["paid_fen"] == 1_000 and account(stack, who)["available_fen"] == 0
    assert_money_conserved(stack, who)


def _openid(stack: Stack, wid: str) -> str:
    stored = get_store().withdrawals.get(stack.tenant, wid)
    assert stored is not None
    return stored.openid


def test_a_refused_transfer_returns_the_money_once_not_found_persists_past_the_window(
    stack: Stack, rules: dict[str, Any], sandbox: Any, metrics: dict[str, int]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_200)
    w = request(who, 1_200)
    sandbox.inject("reject", out_bill_no=w["id"])
    pay_out(stack, w["id"])
    stored = get_store().withdrawals.get(stack.tenant, w["id"])
    assert stored is not None and stored.state is WithdrawalState.SENDING
    assert stored.refusal and "NOT_ENOUGH" in stored.refusal and stored.not_found == 1
    shown = views.admin_withdrawal_view(stored)  # operators see why the money has not come back yet
    assert shown["state"] == "sending" and "NOT_ENOUGH" in shown["refusal"] and shown["not_found"] == 1
    summary = reconcile_at(LATER)  # a second NOT_FOUND, but inside the window after the create
    assert summary["waiting"] >= 1 and summary["resent"] == 0  # a refused bill is not sent again
    assert state_of(stack, w["id"]) is WithdrawalState.SENDING
    assert account(stack, who)["available_fen"] == 0
    summary = reconcile_at(PAST_WINDOW)
    assert summary["abandoned"] >= 1
    failed = get_store().withdrawals.get(stack.tenant, w["id"])
    assert failed is not None and failed.state is WithdrawalState.FAILED
    assert "NOT_ENOUGH" in (failed.fail_reason or "")
    assert account(stack, who)["available_fen"] == 1_200 and account(stack, who)["withdrawing_fen"] == 0
    assert actions(stack, w["id"])[-3:] == [
        "withdrawal.bill_not_found",
        "withdrawal.bill_not_found",
        "withdrawal.failed",
    ]
    # one metric per abandoned bill (other tests of this worker may have left bills in flight too)
    assert metrics.get("PayoutsAbandoned") == summary["abandoned"]
    assert sandbox.query_bill(w["id"]) is None
    assert_money_conserved(stack, who)


def test_a_final_fail_from_wechat_returns_the_money_at_once(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_300)
    w = request(who, 1_300)
    sandbox.inject("fail", out_bill_no=w["id"])
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.FAILED
    assert account(stack, who)["available_fen"] == 1_300


# --- 3.10: a withdrawal WeChat never knew does not stay in flight forever -----------------------


def test_a_withdrawal_wechat_never_knew_fails_after_the_window_with_the_money_back(
    stack: Stack, rules: dict[str, Any], sandbox: Any, metrics: dict[str, int]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_400)
    w = request(who, 1_400)
    sandbox.inject("timeout_before_accept", times=100, out_bill_no=w["id"])  # WeChat never gets it
    pay_out(stack, w["id"])
    for _ in range(MAX_CREATE_ATTEMPTS + 2):
        reconcile_at(LATER)
    stored = get_store().withdrawals.get(stack.tenant, w["id"])
    assert stored is not None and stored.state is WithdrawalState.SENDING
    assert stored.attempts == MAX_CREATE_ATTEMPTS  # then it stops creating and waits
    assert account(stack, who)["withdrawing_fen"] == 1_400
    summary = reconcile_at(PAST_WINDOW)
    assert summary["abandoned"] == 1
    assert state_of(stack, w["id"]) is WithdrawalState.FAILED
    assert account(stack, who)["available_fen"] == 1_400 and account(stack, who)["withdrawing_fen"] == 0
    assert actions(stack, w["id"])[-1] == "withdrawal.failed"
    assert metrics.get("PayoutsAbandoned") == 1 and metrics.get("PayoutsAbandonedFen") == 1_400
    sandbox.clear_faults()
    reconcile_at(PAST_WINDOW + PAST_WINDOW)  # failed: never sent again
    assert sandbox.query_bill(w["id"]) is None
    assert_money_conserved(stack, who)


def test_a_bill_wechat_showed_before_and_no_longer_finds_is_a_mismatch_not_a_refund(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch, metrics: dict[str, int]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    monkeypatch.setattr(SandboxTransfer, "query_bill", lambda self, out_bill_no: None)
    summary = reconcile_at(PAST_WINDOW + PAST_WINDOW)
    assert summary["mismatches"] >= 1 and metrics.get("ReconciliationMismatches", 0) >= 1
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    assert account(stack, who)["withdrawing_fen"] == 1_000


# --- 3.8: an answer with another amount or payee is never applied -------------------------------


def _callback(sandbox: Any, wid: str, **changes: Any) -> tuple[dict[str, str], bytes]:
    bill = sandbox.query_answer(wid)
    resource = {**bill, "state": "SUCCESS", **changes}
    return sandbox._pay.notification("MCHTRANSFER.BILL.FINISHED", "商家转账单据终态通知", "mch_payment", resource)


@pytest.mark.parametrize("changes", [{"transfer_amount": 999}, {"openid": "o-someone-else-entirely"}])
def test_a_callback_with_another_amount_or_payee_is_refused_and_counted(
    stack: Stack, rules: dict[str, Any], sandbox: Any, metrics: dict[str, int], changes: dict[str, Any]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    before = get_store().withdrawals.get(stack.tenant, w["id"])
    headers, body = _callback(sandbox, w["id"], **changes)
    with pytest.raises(StateConflict) as err:
        payouts.transfer_notification(stack.tenant, headers, body)
    assert err.value.status == 409 and err.value.code == "transfer_mismatch"  # WeChat notifies again
    assert get_store().withdrawals.get(stack.tenant, w["id"]) == before  # nothing changed
    assert account(stack, who)["paid_fen"] == 0 and account(stack, who)["withdrawing_fen"] == 1_000
    assert metrics.get("ReconciliationMismatches") == 1
    headers, body = _callback(sandbox, w["id"])  # the true callback still applies
    assert payouts.transfer_notification(stack.tenant, headers, body)["code"] == "SUCCESS"
    assert state_of(stack, w["id"]) is WithdrawalState.PAID


def test_a_query_answer_with_another_amount_is_not_applied_by_reconciliation(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch, metrics: dict[str, int]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    real_query = SandboxTransfer.query_bill

    def query(self: Any, out_bill_no: str) -> Any:
        bill = real_query(self, out_bill_no)
        if out_bill_no != w["id"]:
            return bill
        assert bill is not None
        return TransferBill(out_bill_no, "SUCCESS", bill.transfer_bill_no, None, None, 100_000, bill.openid)

    monkeypatch.setattr(SandboxTransfer, "query_bill", query)
    summary = reconcile_at(LATER)
    assert summary["mismatches"] >= 1 and summary["errors"] == 0
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    assert account(stack, who)["paid_fen"] == 0
    assert metrics.get("ReconciliationMismatches", 0) >= 1


def test_a_repeated_callback_after_paid_still_answers_success(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    [(headers, body)] = sandbox.user_confirm(w["id"])
    for _ in range(2):
        assert payouts.transfer_notification(stack.tenant, headers, body)["code"] == "SUCCESS"
    assert actions(stack, w["id"]).count("withdrawal.paid") == 1


# --- package_info: only WeChat's create answer has it -------------------------------------------


def test_reconciliation_keeps_the_package_the_user_needs_to_confirm(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    package = withdrawals.confirmation(who, w["id"])["package_info"]
    sandbox.inject("query_delay", times=1, seconds=0)  # any query answer: WAIT_USER_CONFIRM, no package
    reconcile_at(LATER)
    assert withdrawals.confirmation(who, w["id"])["package_info"] == package
    records_before = len(actions(stack, w["id"]))
    reconcile_at(LATER)  # nothing new: no audit record either
    assert len(actions(stack, w["id"])) == records_before


def test_a_lost_create_answer_still_gives_the_user_a_package_to_confirm(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    sandbox.inject("timeout_after_accept", out_bill_no=w["id"])  # the bill exists; its answer is lost
    pay_out(stack, w["id"])
    reconcile_at(LATER)
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    assert withdrawals.confirmation(who, w["id"])["package_info"] == sandbox.create_answer(w["id"])["package_info"]


# --- 3.11: ended withdrawals stop counting towards the day's limits -------------------------------


@pytest.fixture
def two_a_day(stack: Stack, finance: Principal, rules: dict[str, Any]) -> None:
    withdrawals.set_rules(finance, {"count_per_day": 2, "max_per_day_fen": 3_000})  # `rules` restores


def _try(who: Principal, amount: int) -> str:
    try:
        return str(request(who, amount)["state"])
    except StateConflict as exc:
        return exc.code


def test_cancelled_and_rejected_withdrawals_give_the_days_limits_back(
    stack: Stack, finance: Principal, two_a_day: None
) -> None:
    who = promoter(stack)
    credit(stack, who, 10_000)
    a, b = request(who, 1_500), request(who, 1_500)
    assert _try(who, 100) == "daily_count_exceeded"
    withdrawals.cancel(who, a["id"])
    assert _try(who, 1_500) == "requested"  # the count and the amount came back
    assert _try(who, 100) == "daily_count_exceeded"
    withdrawals.reject(finance, b["id"], "no")
    assert _try(who, 1_500) == "requested"
    quote = withdrawals.quote(who, 100)
    assert quote["remaining_today"] == {"count": 0, "amount_fen": 0}
    assert_money_conserved(stack, who)


def test_a_transfer_failing_at_wechat_gives_the_days_limits_back(stack: Stack, two_a_day: None, sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 10_000)
    a = request(who, 1_500)
    request(who, 1_000)
    sandbox.inject("fail", out_bill_no=a["id"])
    pay_out(stack, a["id"])
    assert state_of(stack, a["id"]) is WithdrawalState.FAILED
    assert withdrawals.quote(who, 100)["remaining_today"] == {"count": 1, "amount_fen": 2_000}


def test_nothing_is_given_back_once_the_day_changed(
    stack: Stack, finance: Principal, two_a_day: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.store.models import AccountModel

    who = promoter(stack)
    credit(stack, who, 10_000)
    a = request(who, 1_000)
    # a request of a later day started that day's counters (written as the request would)
    AccountModel(f"{stack.tenant}#{who.subject}").update(
        actions=[
            AccountModel.wd_day.set("2999-01-01"),
            AccountModel.wd_day_count.set(1),
            AccountModel.wd_day_fen.set(500),
        ]
    )
    withdrawals.cancel(who, a["id"])
    item = AccountModel.get(f"{stack.tenant}#{who.subject}", consistent_read=True)
    assert (item.wd_day, item.wd_day_count, item.wd_day_fen) == ("2999-01-01", 1, 500)
    assert account(stack, who)["available_fen"] == 10_000  # the money itself always returns
    # and a withdrawal requested yesterday gives nothing back today
    b = request(who, 1_000)
    tomorrow = utcnow() + timedelta(days=1)
    monkeypatch.setattr(withdrawals, "utcnow", lambda: tomorrow)
    count_before = AccountModel.get(f"{stack.tenant}#{who.subject}", consistent_read=True).wd_day_count
    withdrawals.cancel(who, b["id"])
    assert AccountModel.get(f"{stack.tenant}#{who.subject}", consistent_read=True).wd_day_count == count_before


# --- reconciliation: bounded, parallel, oldest first ----------------------------------------------


def test_reconciliation_is_bounded_parallel_and_starts_with_the_oldest(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    who = promoter(stack)
    credit(stack, who, 10_000)
    long_ago = utcnow() - timedelta(days=3650)  # older than anything other tests left in flight
    moments = (long_ago + timedelta(seconds=i) for i in range(100))
    monkeypatch.setattr(withdrawals, "utcnow", lambda: next(moments))
    ids = [request(who, 1_000)["id"] for _ in range(6)]
    monkeypatch.undo()
    pay_out(stack, *ids)
    sandbox.inject("drop_callback", times=len(ids))
    for wid in ids:
        sandbox.user_confirm(wid)  # every callback lost
    queried: list[str] = []
    threads: set[int] = set()
    real_query = SandboxTransfer.query_bill
    lock = threading.Lock()
    barrier = threading.Barrier(2, timeout=10)

    def query(self: Any, out_bill_no: str) -> Any:
        with lock:
            queried.append(out_bill_no)
            threads.add(threading.get_ident())
        if out_bill_no in ids[:2]:
            barrier.wait()  # only passes if two queries run at the same time
        return real_query(self, out_bill_no)

    monkeypatch.setattr(SandboxTransfer, "query_bill", query)
    monkeypatch.setattr(payouts, "RECONCILE_MAX_PER_RUN", 4)
    monkeypatch.setattr(payouts, "RECONCILE_WORKERS", 2)
    summary = reconcile_at(LATER)
    mine = [q for q in queried if q in ids]
    assert summary["checked"] == 4 and summary["deferred"] >= 2
    assert sorted(mine) == sorted(ids[:4]), "the oldest first"
    assert len(threads) == 2
    assert [state_of(stack, wid) for wid in ids[4:]] == [WithdrawalState.WAIT_USER_CONFIRM] * 2
    monkeypatch.setattr(payouts, "RECONCILE_MAX_PER_RUN", 1000)
    barrier.abort()
    reconcile_at(LATER)
    assert all(state_of(stack, wid) is WithdrawalState.PAID for wid in ids)
