"""Withdrawals on DynamoDB Local: reservations, limits, review, payouts through the sandbox
transfer provider (with its faults), callbacks, reconciliation and the money they move."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import utcnow
from chalicelib.entities import Principal, Role
from chalicelib.errors import DomainError, InvalidInput, NotAuthenticated, StateConflict
from chalicelib.ledger import BUCKETS, LedgerLine, LedgerWrite
from chalicelib.services import logins, payouts, withdrawals
from chalicelib.store import get_store
from chalicelib.store.audit import for_entity, verify_chain
from chalicelib.withdrawal import WithdrawalState
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration


def promoter(stack: Stack) -> Principal:
    return stack.principal(logins.login(f"dev-{unique('w')}", stack.tenant).user.id)


def credit(stack: Stack, who: Principal, amount_fen: int, state: str = "available") -> None:
    """A commission line of `amount_fen` (negative: a clawback) in `state`, with its account
    delta, written exactly as the commission engine writes them."""
    write = LedgerWrite(order_id=f"o{uuid.uuid4().hex[:12]}")
    write.new_lines.append(
        LedgerLine(
            tenant=who.tenant,
            promoter=who.subject,
            order_id=write.order_id,
            level=1,
            event="paid" if amount_fen >= 0 else "refund-1",
            amount_fen=amount_fen,
            state=state,
            buyer="someone",
            trace={"test": True},
            created_at=utcnow(),
        )
    )
    write.add_account(who.subject, f"{state}_fen", amount_fen)
    assert get_store().ledger.apply(who.tenant, write)


def account(stack: Stack, who: Principal) -> dict[str, int]:
    return get_store().ledger.account(stack.tenant, who.subject)


def assert_money_conserved(stack: Stack, who: Principal) -> None:
    """Ledger total = available + frozen + pending + withdrawing + paid, and per state where the
    ledger has the state; nothing negative but available."""
    buckets = account(stack, who)
    lines: dict[str, int] = defaultdict(int)
    for line in get_store().ledger.all_lines(stack.tenant, who.subject):
        lines[line.state] += line.amount_fen
    assert sum(lines.values()) == sum(buckets[b] for b in BUCKETS)
    assert buckets["pending_fen"] == lines["pending"]
    assert buckets["frozen_fen"] == lines["frozen"]
    assert buckets["available_fen"] + buckets["withdrawing_fen"] + buckets["paid_fen"] == lines["available"]
    assert all(buckets[b] >= 0 for b in BUCKETS if b != "available_fen"), buckets


def request(who: Principal, amount: int, **kwargs: Any) -> dict[str, Any]:
    body, _ = withdrawals.request(who, amount, **kwargs)
    return body


def pay_out(stack: Stack, *ids: str) -> None:
    """Approve, run the payout, deliver the queue."""
    fin = stack.principal("finance", Role.FINANCE)
    for wid in ids:
        if get_store().withdrawals.get(stack.tenant, wid).state is WithdrawalState.REQUESTED:  # type: ignore[union-attr]
            withdrawals.approve(fin, wid)
    payouts.payout_run(utcnow())
    stack.drain()


def state_of(stack: Stack, wid: str) -> WithdrawalState:
    w = get_store().withdrawals.get(stack.tenant, wid)
    assert w is not None
    return w.state


# --- requests ------------------------------------------------------------------------------


def test_a_request_reserves_the_amount_and_is_listed(stack: Stack, rules: dict[str, Any]) -> None:
    who = promoter(stack)
    credit(stack, who, 5_000)
    body = request(who, 3_000)
    assert body["state"] == "requested" and body["amount_fen"] == 3_000 and body["fee_fen"] == 0
    assert account(stack, who)["available_fen"] == 2_000
    assert account(stack, who)["withdrawing_fen"] == 3_000
    listed = withdrawals.mine(who, None, 10)["items"]
    assert [w["id"] for w in listed] == [body["id"]]
    assert_money_conserved(stack, who)
    records = list(for_entity(stack.tenant, f"withdrawal:{body['id']}"))
    assert [r.action for r in records] == ["withdrawal.requested"] and verify_chain(records)


def test_twenty_concurrent_requests_against_a_balance_for_five_give_exactly_five(
    stack: Stack, rules: dict[str, Any]
) -> None:
    who = promoter(stack)
    credit(stack, who, 5 * 1_000)

    def attempt(_: int) -> str:
        try:
            return request(who, 1_000)["state"]
        except StateConflict as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("requested") == 5, outcomes
    assert outcomes.count("insufficient_balance") == 15, outcomes
    assert account(stack, who)["available_fen"] == 0
    assert account(stack, who)["withdrawing_fen"] == 5_000
    assert len(withdrawals.mine(who, None, 100)["items"]) == 5
    assert_money_conserved(stack, who)


def test_the_daily_count_holds_under_concurrency(stack: Stack, finance: Principal, rules: dict[str, Any]) -> None:
    withdrawals.set_rules(finance, {"count_per_day": 3})
    who = promoter(stack)
    credit(stack, who, 10 * 1_000)
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda _: _try(who, 1_000), range(10)))
    assert outcomes.count("requested") == 3, outcomes
    assert outcomes.count("daily_count_exceeded") == 7, outcomes
    assert account(stack, who)["available_fen"] == 7_000


def test_the_daily_amount_limit(stack: Stack, finance: Principal, rules: dict[str, Any]) -> None:
    withdrawals.set_rules(finance, {"max_per_day_fen": 5_000})
    who = promoter(stack)
    credit(stack, who, 20_000)
    assert _try(who, 4_000) == "requested"
    assert _try(who, 1_500) == "daily_amount_exceeded"
    assert _try(who, 1_000) == "requested"
    quote = withdrawals.quote(who, 100)
    assert quote["remaining_today"] == {"count": 998, "amount_fen": 0}


def _try(who: Principal, amount: int) -> str:
    try:
        return request(who, amount)["state"]
    except DomainError as exc:
        return exc.code


def test_fee_minimum_real_name_and_auto_approval(stack: Stack, finance: Principal, rules: dict[str, Any]) -> None:
    withdrawals.set_rules(finance, {"fee_bps": 100, "fee_fixed_fen": 50, "auto_approve_below_fen": 2_000})
    who = promoter(stack)
    credit(stack, who, 500_000)
    quote = withdrawals.quote(who, 10_000)
    assert (quote["fee_fen"], quote["net_fen"]) == (150, 9_850)
    small = request(who, 1_000)
    assert small["state"] == "approved" and small["fee_fen"] == 60
    with pytest.raises(InvalidInput) as err:
        request(who, 99)
    assert err.value.code == "below_minimum"
    with pytest.raises(InvalidInput) as err:
        request(who, 250_000)
    assert err.value.code == "real_name_required"
    named = request(who, 250_000, real_name="张三")
    assert named["state"] == "requested"
    assert get_store().withdrawals.get(stack.tenant, named["id"]).real_name == "张三"  # type: ignore[union-attr]


def test_an_idempotency_key_makes_a_retried_request_the_same_withdrawal(stack: Stack, rules: dict[str, Any]) -> None:
    who = promoter(stack)
    credit(stack, who, 5_000)
    first, created = withdrawals.request(who, 2_000, None, "key-1")
    again, created_again = withdrawals.request(who, 2_000, None, "key-1")
    assert created and not created_again and first["id"] == again["id"]
    assert account(stack, who)["available_fen"] == 3_000
    with pytest.raises(StateConflict):
        withdrawals.request(who, 3_000, None, "key-1")


def test_a_negative_balance_after_a_clawback_blocks_withdrawals_until_covered(
    stack: Stack, rules: dict[str, Any]
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    credit(stack, who, -600)  # a refund after settlement of commission already withdrawn
    assert account(stack, who)["available_fen"] == -600
    assert _try(who, 100) == "negative_balance"
    credit(stack, who, 800)
    assert _try(who, 100) == "requested"
    assert_money_conserved(stack, who)
    assert state_of(stack, w["id"]) is WithdrawalState.REQUESTED


# --- review --------------------------------------------------------------------------------


def test_cancel_and_reject_return_the_money_and_final_states_do_not_move(
    stack: Stack, finance: Principal, rules: dict[str, Any]
) -> None:
    who = promoter(stack)
    credit(stack, who, 3_000)
    a, b = request(who, 1_000), request(who, 1_000)
    assert withdrawals.cancel(who, a["id"])["state"] == "cancelled"
    rejected = withdrawals.reject(finance, b["id"], "account under review")
    assert rejected["state"] == "rejected" and rejected["reason"] == "account under review"
    assert account(stack, who)["available_fen"] == 3_000
    assert account(stack, who)["withdrawing_fen"] == 0
    for action in (lambda: withdrawals.cancel(who, a["id"]), lambda: withdrawals.approve(finance, b["id"])):
        with pytest.raises(StateConflict):
            action()
    assert account(stack, who)["available_fen"] == 3_000
    records = list(for_entity(stack.tenant, f"withdrawal:{b['id']}"))
    assert [r.action for r in records] == ["withdrawal.requested", "withdrawal.rejected"]
    assert verify_chain(records)


def test_only_reviewers_approve_and_promoters_see_only_their_own(stack: Stack, rules: dict[str, Any]) -> None:
    from chalicelib.errors import Missing, NotAllowed

    who, other = promoter(stack), promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    with pytest.raises(NotAllowed):
        withdrawals.approve(stack.principal("ops", Role.OPS), w["id"])
    with pytest.raises(NotAllowed):
        withdrawals.approve(other, w["id"])
    with pytest.raises(Missing):
        withdrawals.get_own(other, w["id"])
    with pytest.raises(Missing):
        withdrawals.cancel(other, w["id"])
    listed = withdrawals.admin_list(stack.principal("auditor", Role.AUDITOR), "requested", None, 100)
    assert w["id"] in [row["id"] for row in listed["items"]]


# --- payouts -------------------------------------------------------------------------------


def test_payout_confirm_and_paid(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 2_000)
    w = request(who, 2_000)
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    confirmation = withdrawals.confirmation(who, w["id"])
    assert confirmation["package_info"] and confirmation["appid"] == stack.tenant and confirmation["mch_id"]
    with pytest.raises(StateConflict):
        withdrawals.cancel(who, w["id"])  # sent: only the payouts service may cancel it, at WeChat
    assert withdrawals.sandbox_user_confirm(who, w["id"])["state"] == "paid"
    assert account(stack, who) == {**dict.fromkeys(BUCKETS, 0), "paid_fen": 2_000}
    with pytest.raises(StateConflict):
        withdrawals.confirmation(who, w["id"])
    assert_money_conserved(stack, who)
    actions = [r.action for r in for_entity(stack.tenant, f"withdrawal:{w['id']}")]
    assert actions == [
        "withdrawal.requested",
        "withdrawal.approved",
        "withdrawal.sending",
        "withdrawal.wait_user_confirm",
        "withdrawal.paid",
    ]


def _one_paid(stack: Stack, who: Principal, wid: str, amount: int, sandbox: Any) -> None:
    """Paid exactly once: the account moved once and WeChat holds one successful bill."""
    assert state_of(stack, wid) is WithdrawalState.PAID
    assert account(stack, who)["paid_fen"] == amount
    assert account(stack, who)["withdrawing_fen"] == 0
    bill = sandbox.query_bill(wid)
    assert bill is not None and bill.state == "SUCCESS"
    assert_money_conserved(stack, who)


def _confirm_when_waiting(stack: Stack, who: Principal, wid: str) -> None:
    if state_of(stack, wid) is WithdrawalState.WAIT_USER_CONFIRM:
        withdrawals.sandbox_user_confirm(who, wid)


def _reconcile_later() -> dict[str, Any]:
    return payouts.reconcile(utcnow() + payouts.STALE_SENDING + timedelta(minutes=1))


@pytest.mark.parametrize("fault", ["timeout_before_accept", "timeout_after_accept", "error_500"])
def test_unclear_answers_are_queried_before_any_retry_and_pay_once(
    stack: Stack, rules: dict[str, Any], sandbox: Any, fault: str
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_500)
    w = request(who, 1_500)
    sandbox.inject(fault, out_bill_no=w["id"])
    pay_out(stack, w["id"])  # the runner redelivers the failed message: query, then create if unknown
    _reconcile_later()
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    _confirm_when_waiting(stack, who, w["id"])
    _one_paid(stack, who, w["id"], 1_500, sandbox)


def _past_the_not_found_window() -> None:
    """Two reconciliation runs: a second NOT_FOUND, then one past the window after the last create."""
    from chalicelib.withdrawal import NOT_FOUND_WINDOW

    _reconcile_later()
    payouts.reconcile(utcnow() + NOT_FOUND_WINDOW + timedelta(minutes=1))


def test_a_refused_transfer_fails_and_returns_the_money_once_not_found_persists(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_200)
    w = request(who, 1_200)
    sandbox.inject("reject", out_bill_no=w["id"])
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.SENDING  # a refusal alone proves nothing
    assert account(stack, who)["withdrawing_fen"] == 1_200
    _past_the_not_found_window()
    assert state_of(stack, w["id"]) is WithdrawalState.FAILED
    assert account(stack, who)["available_fen"] == 1_200
    assert "NOT_ENOUGH" in (get_store().withdrawals.get(stack.tenant, w["id"]).fail_reason or "")  # type: ignore[union-attr]
    assert_money_conserved(stack, who)


def test_a_transfer_failing_at_wechat_returns_the_money(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_300)
    w = request(who, 1_300)
    pay_out(stack, w["id"])
    sandbox.inject("fail", out_bill_no=w["id"])
    assert withdrawals.sandbox_user_confirm(who, w["id"])["state"] == "failed"
    assert account(stack, who)["available_fen"] == 1_300
    assert account(stack, who)["paid_fen"] == 0
    assert_money_conserved(stack, who)


def test_repeated_callbacks_change_nothing_more(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    sandbox.inject("repeat_callbacks", times=3, out_bill_no=w["id"])
    withdrawals.sandbox_user_confirm(who, w["id"])
    headers, body = sandbox.notification_for(w["id"])
    for _ in range(3):
        payouts.transfer_notification(stack.tenant, headers, body)
    _one_paid(stack, who, w["id"], 1_000, sandbox)
    paid_records = [r for r in for_entity(stack.tenant, f"withdrawal:{w['id']}") if r.action == "withdrawal.paid"]
    assert len(paid_records) == 1


def test_a_worker_crash_between_the_transfer_and_its_record_is_recovered_by_querying(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_100)
    w = request(who, 1_100)
    real_record = payouts.record
    crashed: list[Any] = []

    def crash_once(tenant: str, bill: Any, source: str) -> Any:
        if source == "transfer" and not crashed:
            crashed.append(bill)
            raise RuntimeError("the worker died after WeChat accepted the bill")
        return real_record(tenant, bill, source)

    monkeypatch.setattr(payouts, "record", crash_once)
    pay_out(stack, w["id"])
    assert crashed, "the crash was not exercised"
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    monkeypatch.setattr(payouts, "record", real_record)
    withdrawals.sandbox_user_confirm(who, w["id"])
    _one_paid(stack, who, w["id"], 1_100, sandbox)


def test_reconciliation_racing_a_callback_records_once(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    notes = sandbox.user_confirm(w["id"])  # WeChat has it as SUCCESS; the callback is on its way
    barrier = threading.Barrier(3)

    def callback() -> None:
        barrier.wait()
        for headers, body in notes:
            payouts.transfer_notification(stack.tenant, headers, body)

    def reconcile() -> None:
        barrier.wait()
        _reconcile_later()

    threads = [threading.Thread(target=f) for f in (callback, reconcile, reconcile)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _one_paid(stack, who, w["id"], 1_000, sandbox)
    paid_records = [r for r in for_entity(stack.tenant, f"withdrawal:{w['id']}") if r.action == "withdrawal.paid"]
    assert len(paid_records) == 1
    assert verify_chain(list(for_entity(stack.tenant, f"withdrawal:{w['id']}")))


def test_a_delayed_query_answer_is_harmless(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    sandbox.inject("query_delay", times=5, seconds=60, out_bill_no=w["id"])
    sandbox.inject("delay_callback", seconds=3600, out_bill_no=w["id"])
    notes = sandbox.user_confirm(w["id"])  # SUCCESS at WeChat; the callback is late
    _reconcile_later()  # WeChat's query still answers WAIT_USER_CONFIRM: nothing changes
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    assert account(stack, who)["withdrawing_fen"] == 1_000
    for headers, body in notes:
        payouts.transfer_notification(stack.tenant, headers, body)
    _reconcile_later()  # a stale WAIT_USER_CONFIRM never moves a paid withdrawal back
    sandbox.clear_faults()
    _one_paid(stack, who, w["id"], 1_000, sandbox)


def test_reconciliation_finishes_a_transfer_whose_callback_never_came(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    sandbox.inject("drop_callback", out_bill_no=w["id"])
    sandbox.user_confirm(w["id"])  # the callback is lost
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    summary = _reconcile_later()
    assert summary["corrected"] >= 1
    _one_paid(stack, who, w["id"], 1_000, sandbox)


def test_a_forged_transfer_callback_is_refused(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    pay_out(stack, w["id"])
    headers, body = sandbox.notification_for(w["id"])
    forged = body.replace(b'"event_type":"', b'"event_type":"X')
    with pytest.raises((NotAuthenticated, InvalidInput)):
        payouts.transfer_notification(stack.tenant, headers, forged)
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM


def test_the_payout_run_report(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    owner = stack.principal("owner", Role.OWNER)
    who = promoter(stack)
    credit(stack, who, 3_000)
    ids = [request(who, 1_000)["id"] for _ in range(3)]
    sandbox.inject("reject", out_bill_no=ids[2])
    sandbox.inject("succeed", out_bill_no=ids[1])
    pay_out(stack, *ids)
    _past_the_not_found_window()  # the refused one fails once WeChat surely has no bill
    run_id = get_store().withdrawals.get(stack.tenant, ids[0]).run_id  # type: ignore[union-attr]
    assert run_id
    report = withdrawals.run_report(owner, run_id)
    assert report["status"] == "done" and report["enqueued"] >= 3
    assert report["by_state"]["wait_user_confirm"]["count"] >= 1
    assert report["by_state"]["paid"] == {"count": 1, "amount_fen": 1_000, "net_fen": 1_000}
    assert [f["id"] for f in report["failures"]] == [ids[2]]
    assert run_id in [r["id"] for r in withdrawals.runs(owner, None, 50)["items"]]
    assert_money_conserved(stack, who)


def test_a_second_payout_run_sends_nothing_twice(stack: Stack, rules: dict[str, Any], sandbox: Any) -> None:
    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    withdrawals.approve(stack.principal("finance", Role.FINANCE), w["id"])
    payouts.payout_run(utcnow())
    payouts.payout_run(utcnow())  # before the worker ran: the message is there twice
    stack.drain()
    w_after = get_store().withdrawals.get(stack.tenant, w["id"])
    assert w_after is not None and w_after.state is WithdrawalState.WAIT_USER_CONFIRM and w_after.attempts == 1
    withdrawals.sandbox_user_confirm(who, w["id"])
    _one_paid(stack, who, w["id"], 1_000, sandbox)


def test_one_broken_withdrawal_does_not_stop_reconciliation(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    who = promoter(stack)
    credit(stack, who, 2_000)
    broken, fine = request(who, 1_000), request(who, 1_000)
    pay_out(stack, broken["id"], fine["id"])
    sandbox.inject("drop_callback", times=2)
    sandbox.user_confirm(broken["id"])
    sandbox.user_confirm(fine["id"])  # both callbacks lost
    real_query = type(sandbox).query_bill

    def query(self: Any, out_bill_no: str) -> Any:
        if out_bill_no == broken["id"]:
            raise RuntimeError("a bug on one withdrawal")
        return real_query(self, out_bill_no)

    monkeypatch.setattr(type(sandbox), "query_bill", query)
    summary = _reconcile_later()
    assert summary["errors"] >= 1
    assert state_of(stack, fine["id"]) is WithdrawalState.PAID
    assert state_of(stack, broken["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    monkeypatch.setattr(type(sandbox), "query_bill", real_query)
    _reconcile_later()
    assert state_of(stack, broken["id"]) is WithdrawalState.PAID
    assert_money_conserved(stack, who)


def test_a_bill_wechat_would_refuse_fails_the_withdrawal_and_returns_the_money(
    stack: Stack, rules: dict[str, Any], sandbox: Any
) -> None:
    from chalicelib.store.models import WithdrawalModel

    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    WithdrawalModel(f"{stack.tenant}#{w['id']}").update(actions=[WithdrawalModel.openid.set("")])  # corrupted
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.FAILED
    assert account(stack, who)["available_fen"] == 1_000
    assert sandbox.query_bill(w["id"]) is None


def test_the_user_cancels_a_transfer_waiting_for_confirmation(
    stack: Stack, finance: Principal, rules: dict[str, Any], sandbox: Any
) -> None:
    who = promoter(stack)
    credit(stack, who, 250_000)
    w = request(who, 250_000, real_name="李四")
    pay_out(stack, w["id"])
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM
    cancelled = withdrawals.take_back(who, w["id"])
    assert cancelled["state"] == "failed" and cancelled["provider_state"] == "CANCELLED"
    assert account(stack, who)["available_fen"] == 250_000
    bill = sandbox.query_bill(w["id"])
    assert bill is not None and bill.state == "CANCELLED"
    stored = get_store().withdrawals.get(stack.tenant, w["id"])
    assert stored is not None and stored.real_name is None  # dropped once final
    last = list(for_entity(stack.tenant, f"withdrawal:{w['id']}"))[-1]
    assert (last.action, last.actor) == ("withdrawal.failed", who.actor)
    with pytest.raises(StateConflict):
        withdrawals.take_back(who, w["id"])
    assert_money_conserved(stack, who)


def test_a_refusal_of_a_bill_wechat_already_holds_records_the_bill_not_a_failure(
    stack: Stack, rules: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.wechat.transfer import TransferRejected
    from chalicelib.wechat.transfer.sandbox import SandboxTransfer

    who = promoter(stack)
    credit(stack, who, 1_000)
    w = request(who, 1_000)
    sandbox.inject("timeout_after_accept", out_bill_no=w["id"])  # WeChat holds the bill; the answer is lost
    real_create, real_query = SandboxTransfer.create_bill, SandboxTransfer.query_bill
    creates: list[str] = []

    def create(self: Any, **kwargs: Any) -> Any:
        creates.append(kwargs["out_bill_no"])
        if len(creates) > 1:  # the retry: WeChat answers "duplicate" instead of returning the bill
            raise TransferRejected("INVALID_REQUEST", "商户单号重复")
        return real_create(self, **kwargs)

    def query(self: Any, out_bill_no: str) -> Any:
        return None if len(creates) < 2 else real_query(self, out_bill_no)  # a stale "not found" first

    monkeypatch.setattr(SandboxTransfer, "create_bill", create)
    monkeypatch.setattr(SandboxTransfer, "query_bill", query)
    pay_out(stack, w["id"])
    assert len(creates) == 3  # the third only asks again for the package_info the lost answer carried
    assert set(creates) == {w["id"]}
    assert state_of(stack, w["id"]) is WithdrawalState.WAIT_USER_CONFIRM  # not failed: no money returned
    assert account(stack, who)["withdrawing_fen"] == 1_000
