"""Withdrawal rules and the withdrawal state machine (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import withdrawal
from chalicelib.errors import InvalidInput
from chalicelib.ledger import BUCKETS
from chalicelib.withdrawal import FINAL, IN_FLIGHT, TRANSITIONS, WithdrawalRules, WithdrawalState

pytestmark = pytest.mark.unit

STATES = list(WithdrawalState)


def test_default_rules_quote_without_fee() -> None:
    q = withdrawal.quote(WithdrawalRules(), 5000)
    assert (q.amount_fen, q.fee_fen, q.net_fen, q.real_name_required, q.auto_approved) == (5000, 0, 5000, False, False)


def test_fee_is_basis_points_rounded_down_plus_fixed() -> None:
    rules = WithdrawalRules(fee_bps=60, fee_fixed_fen=100)  # 0.6 % + 1 yuan
    q = withdrawal.quote(rules, 12_345)
    assert q.fee_fen == 74 + 100  # 12345 * 60 / 10000 = 74.07 -> 74
    assert q.net_fen == 12_345 - 174


@pytest.mark.parametrize(
    ("amount", "code"),
    [(99, "below_minimum"), (2_000_001, "daily_amount_exceeded")],
)
def test_amounts_outside_the_rules_are_refused(amount: int, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        withdrawal.quote(WithdrawalRules(), amount)
    assert err.value.code == code


def test_a_fee_that_leaves_less_than_wechats_minimum_is_refused() -> None:
    rules = WithdrawalRules(min_fen=100, fee_fixed_fen=95)
    with pytest.raises(InvalidInput) as err:
        withdrawal.quote(rules, 100)
    assert err.value.code == "below_minimum"


def test_real_name_from_the_threshold_and_auto_approval_below_the_limit() -> None:
    rules = WithdrawalRules(auto_approve_below_fen=10_000, real_name_from_fen=50_000)
    assert withdrawal.quote(rules, 9_999).auto_approved
    assert not withdrawal.quote(rules, 10_000).auto_approved
    assert not withdrawal.quote(rules, 49_999).real_name_required
    assert withdrawal.quote(rules, 50_000).real_name_required


def test_parse_rules_is_a_partial_update_and_names_every_bad_field() -> None:
    base = WithdrawalRules(count_per_day=5)
    assert withdrawal.parse_rules({"fee_bps": 100}, base) == WithdrawalRules(count_per_day=5, fee_bps=100)
    with pytest.raises(InvalidInput) as err:
        withdrawal.parse_rules({"fee_bps": -1, "min_fen": "100", "joining_fee": 1, "count_per_day": True})
    fields = sorted(d["field"] for d in err.value.details)
    assert fields == ["count_per_day", "fee_bps", "joining_fee", "min_fen"]


def test_parse_rules_refuses_inconsistent_rules() -> None:
    with pytest.raises(InvalidInput):
        withdrawal.parse_rules({"min_fen": 500, "fee_fixed_fen": 495})
    with pytest.raises(InvalidInput):
        withdrawal.parse_rules({"min_fen": 10_000, "max_per_day_fen": 5_000})
    with pytest.raises(InvalidInput):  # WeChat requires the real name from 2,000 yuan: a tenant cannot raise it
        withdrawal.parse_rules({"real_name_from_fen": 300_000})


@pytest.mark.parametrize(
    ("provider", "ours"),
    [
        ("ACCEPTED", WithdrawalState.PROCESSING),
        ("PROCESSING", WithdrawalState.PROCESSING),
        ("TRANSFERING", WithdrawalState.PROCESSING),
        ("WAIT_USER_CONFIRM", WithdrawalState.WAIT_USER_CONFIRM),
        ("SUCCESS", WithdrawalState.PAID),
        ("FAIL", WithdrawalState.FAILED),
        ("CANCELLED", WithdrawalState.FAILED),
        ("SOMETHING_NEW", WithdrawalState.PROCESSING),
    ],
)
def test_provider_states_map_to_ours(provider: str, ours: WithdrawalState) -> None:
    assert withdrawal.provider_target(provider) is ours


def test_nothing_moves_a_final_withdrawal() -> None:
    for action, moves in TRANSITIONS.items():
        assert not FINAL & set(moves), action
    for state in FINAL:
        for target in STATES:
            assert not withdrawal.provider_may_move(state, target)
    assert withdrawal.provider_may_move(WithdrawalState.SENDING, WithdrawalState.PAID)
    assert not withdrawal.provider_may_move(WithdrawalState.APPROVED, WithdrawalState.PAID)


def test_people_cannot_cancel_or_reject_what_was_sent() -> None:
    for action in ("cancel", "reject", "approve"):
        assert not IN_FLIGHT & set(TRANSITIONS[action])


@given(
    amount=st.integers(min_value=1, max_value=10**9),
    path=st.lists(st.sampled_from(STATES), min_size=1, max_size=6),
)
def test_money_is_conserved_along_any_path(amount: int, path: list[WithdrawalState]) -> None:
    """Reserving then moving through states never creates or destroys money, and a withdrawal's
    money ends either paid or back in available (never both, never twice)."""
    buckets = dict.fromkeys(BUCKETS, 0)
    buckets["available_fen"] = amount
    for bucket, delta in withdrawal.reserve_moves(amount).items():  # what the request writes
        buckets[bucket] += delta
    state = WithdrawalState.APPROVED
    for target in path:
        if state in FINAL:
            break
        for bucket, delta in withdrawal.account_moves(target, amount).items():
            buckets[bucket] += delta
        state = target
    assert sum(buckets.values()) == amount
    assert all(v >= 0 for v in buckets.values())
    if state is WithdrawalState.PAID:
        assert buckets["paid_fen"] == amount
    elif state in FINAL:
        assert buckets["available_fen"] == amount
    else:
        assert buckets["withdrawing_fen"] == amount


def test_local_day_uses_the_tenants_timezone() -> None:
    late_utc = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)  # 00:30 on the 25th in Shanghai
    assert withdrawal.local_day(late_utc, "Asia/Shanghai") == "2026-11-25"
    assert withdrawal.local_day(late_utc, "UTC") == "2026-11-24"
