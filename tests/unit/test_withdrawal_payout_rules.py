"""The pure payout rules the services run: when a NOT_FOUND bill may give the money back, what a
WeChat answer may change, what a request reserves and when the day's limits come back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import withdrawal
from chalicelib.withdrawal import (
    MAX_CREATE_ATTEMPTS,
    NOT_FOUND_WINDOW,
    RETURNS_MONEY,
    BillNotFound,
    Withdrawal,
    WithdrawalState,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
SENDING = Withdrawal(
    tenant="wx1",
    id="W1",
    promoter="u1",
    openid="o1",
    amount_fen=1_000,
    fee_fen=0,
    state=WithdrawalState.SENDING,
    created_at=T0,
    updated_at=T0,
    attempts=1,
    sent_at=T0,
    create_at=T0,
)


def test_not_found_after_an_unclear_or_lost_create_sends_the_same_bill_again() -> None:
    assert withdrawal.after_not_found(SENDING, T0 + timedelta(minutes=11)) is BillNotFound.RESEND


def test_not_found_after_a_refusal_waits_then_gives_up_only_past_the_window_and_on_a_second_answer() -> None:
    refused = replace(SENDING, refusal="NOT_ENOUGH: 资金不足")
    assert withdrawal.after_not_found(refused, T0 + timedelta(minutes=1)) is BillNotFound.WAIT
    # one NOT_FOUND, however late, is not enough
    assert withdrawal.after_not_found(refused, T0 + timedelta(days=1)) is BillNotFound.WAIT
    seen_once = replace(refused, not_found=1)
    assert withdrawal.after_not_found(seen_once, T0 + NOT_FOUND_WINDOW) is BillNotFound.WAIT
    assert withdrawal.after_not_found(seen_once, T0 + NOT_FOUND_WINDOW + timedelta(seconds=1)) is BillNotFound.ABANDON


def test_the_window_counts_from_the_last_create_attempt() -> None:
    later = replace(SENDING, refusal="x", not_found=3, create_at=T0 + timedelta(hours=2))
    assert withdrawal.after_not_found(later, T0 + timedelta(hours=2, minutes=29)) is BillNotFound.WAIT
    assert withdrawal.after_not_found(later, T0 + timedelta(hours=2, minutes=31)) is BillNotFound.ABANDON


def test_creating_stops_after_the_last_attempt_and_the_window_decides() -> None:
    spent = replace(SENDING, attempts=MAX_CREATE_ATTEMPTS, not_found=1)
    assert withdrawal.after_not_found(spent, T0 + timedelta(minutes=5)) is BillNotFound.WAIT
    assert withdrawal.after_not_found(spent, T0 + timedelta(minutes=31)) is BillNotFound.ABANDON


@pytest.mark.parametrize("state", [WithdrawalState.PROCESSING, WithdrawalState.WAIT_USER_CONFIRM])
def test_a_bill_wechat_showed_before_is_never_given_up_on_not_found(state: WithdrawalState) -> None:
    shown = replace(SENDING, state=state, provider_state="ACCEPTED", not_found=9, refusal="x")
    assert withdrawal.after_not_found(shown, T0 + timedelta(days=30)) is BillNotFound.MISMATCH


@given(
    minutes=st.integers(min_value=0, max_value=10_000),
    not_found=st.integers(min_value=0, max_value=10),
    attempts=st.integers(min_value=1, max_value=20),
    refused=st.booleans(),
)
def test_money_never_returns_inside_the_window_or_on_the_first_not_found(
    minutes: int, not_found: int, attempts: int, refused: bool
) -> None:
    w = replace(SENDING, not_found=not_found, attempts=attempts, refusal="x" if refused else None)
    decision = withdrawal.after_not_found(w, T0 + timedelta(minutes=minutes))
    if decision is BillNotFound.ABANDON:
        assert timedelta(minutes=minutes) > NOT_FOUND_WINDOW
        assert not_found + 1 >= withdrawal.NOT_FOUND_QUERIES
        assert refused or attempts >= MAX_CREATE_ATTEMPTS


def test_an_answer_with_another_amount_payee_or_final_state_disagrees() -> None:
    sent = replace(SENDING, fee_fen=100)  # WeChat pays the net: 900
    paid = WithdrawalState.PAID
    assert withdrawal.bill_disagreements(sent, paid, 900, "o1") == []
    assert withdrawal.bill_disagreements(sent, paid, None, None) == []  # create answers carry neither
    assert withdrawal.bill_disagreements(sent, paid, 1_000, "o1") == ["amount"]
    assert withdrawal.bill_disagreements(sent, paid, 900, "o2") == ["openid"]
    failed = replace(sent, state=WithdrawalState.FAILED)
    assert withdrawal.bill_disagreements(failed, paid, 900, "o1") == ["state"]
    assert withdrawal.bill_disagreements(failed, WithdrawalState.FAILED, 900, "o1") == []
    assert withdrawal.bill_disagreements(failed, WithdrawalState.PROCESSING, 900, "o1") == []  # stale, harmless


def test_news_in_the_same_state_is_recorded_but_never_on_a_final_withdrawal() -> None:
    processing = WithdrawalState.PROCESSING
    assert not withdrawal.provider_may_move(processing, processing)
    assert withdrawal.provider_may_move(processing, processing, news=True)
    assert not withdrawal.provider_may_move(WithdrawalState.PAID, WithdrawalState.PAID, news=True)
    assert not withdrawal.provider_may_move(WithdrawalState.APPROVED, processing, news=True)


@given(amount=st.integers(min_value=1, max_value=10**9))
def test_a_request_moves_its_amount_from_available_to_withdrawing(amount: int) -> None:
    moves = withdrawal.reserve_moves(amount)
    assert moves == {"available_fen": -amount, "withdrawing_fen": amount}
    assert sum(moves.values()) == 0


@pytest.mark.parametrize("target", list(WithdrawalState))
def test_only_an_unpaid_end_on_the_request_day_gives_the_days_limits_back(target: WithdrawalState) -> None:
    assert withdrawal.gives_back_day(target, "2026-11-25", "2026-11-25") is (target in RETURNS_MONEY)
    assert not withdrawal.gives_back_day(target, "2026-11-25", "2026-11-26")


@pytest.mark.parametrize(
    ("recorded", "answered", "moves"),
    [
        ("WAIT_USER_CONFIRM", "PROCESSING", False),  # a delayed answer: the package must stay
        ("WAIT_USER_CONFIRM", "ACCEPTED", False),
        ("TRANSFERING", "WAIT_USER_CONFIRM", False),
        ("WAIT_USER_CONFIRM", "TRANSFERING", True),  # the user confirmed: on to processing
        ("PROCESSING", "WAIT_USER_CONFIRM", True),
        (None, "PROCESSING", True),
    ],
)
def test_a_stale_bill_state_never_moves_a_withdrawal_back(recorded: str | None, answered: str, moves: bool) -> None:
    current = withdrawal.provider_target(recorded) if recorded else WithdrawalState.SENDING
    target = withdrawal.provider_target(answered)
    assert withdrawal.provider_may_move(current, target, news=True, recorded=recorded, answered=answered) is moves
