"""Money conservation through withdrawals (Hypothesis stateful, on DynamoDB Local).

After any sequence of earnings, clawbacks, withdrawal requests, approvals, rejections,
cancellations and payouts that succeed or fail, for the promoter:
ledger total = available + frozen + pending + withdrawing + paid; nothing is negative except
available after a clawback, and a negative available refuses every withdrawal.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chalicelib.clock import utcnow
from chalicelib.entities import Principal, Role
from chalicelib.errors import StateConflict
from chalicelib.services import payouts, withdrawals
from chalicelib.store import get_store
from chalicelib.withdrawal import WithdrawalState
from tests.integration.test_withdrawals import assert_money_conserved, credit, promoter
from tests.stack import OPEN_RULES, Stack

pytestmark = pytest.mark.integration

amounts = st.integers(min_value=100, max_value=5_000)


class WithdrawalMachine(RuleBasedStateMachine):
    """One promoter's money; `stack`, `finance` and `sandbox` are set by the test."""

    stack: Stack
    finance: Principal
    sandbox: Any

    @initialize()
    def start(self) -> None:
        self.who = promoter(self.stack)
        self.available = 0  # the model: what available should be
        self.ids: list[str] = []

    @rule(amount=amounts, state=st.sampled_from(["available", "pending", "frozen"]))
    def earn(self, amount: int, state: str) -> None:
        credit(self.stack, self.who, amount, state)
        if state == "available":
            self.available += amount

    @rule(amount=amounts)
    def claw_back(self, amount: int) -> None:
        credit(self.stack, self.who, -amount)
        self.available -= amount

    @rule(amount=amounts)
    def request(self, amount: int) -> None:
        refused = None
        try:
            body, _ = withdrawals.request(self.who, amount)
        except StateConflict as exc:
            refused = exc.code
        if refused:
            assert self.available < amount, refused
            return
        assert self.available >= amount, "reserved more than was available"
        self.available -= amount
        self.ids.append(body["id"])

    def _pick(self, index: int) -> str:
        return self.ids[index % len(self.ids)]

    @precondition(lambda self: self.ids)
    @rule(index=st.integers(0, 100), action=st.sampled_from(["approve", "reject", "cancel"]))
    def review(self, index: int, action: str) -> None:
        wid = self._pick(index)
        try:
            if action == "approve":
                withdrawals.approve(self.finance, wid)
            elif action == "reject":
                withdrawals.reject(self.finance, wid, "test")
            else:
                withdrawals.cancel(self.who, wid)
        except StateConflict:
            return
        if action != "approve":
            self.available += get_store().withdrawals.get(self.stack.tenant, wid).amount_fen  # type: ignore[union-attr]

    @rule()
    def payout_run(self) -> None:
        payouts.payout_run(utcnow())
        self.stack.drain()

    @precondition(lambda self: self.ids)
    @rule(index=st.integers(0, 100), succeed=st.booleans())
    def user_confirms(self, index: int, succeed: bool) -> None:
        wid = self._pick(index)
        w = get_store().withdrawals.get(self.stack.tenant, wid)
        assert w is not None
        if w.state is not WithdrawalState.WAIT_USER_CONFIRM:
            return
        if not succeed:
            self.sandbox.inject("fail", out_bill_no=wid)
        after = withdrawals.sandbox_user_confirm(self.who, wid)
        assert after["state"] == ("paid" if succeed else "failed")
        if not succeed:
            self.available += w.amount_fen

    @invariant()
    def conserved(self) -> None:
        if not hasattr(self, "who"):
            return
        assert_money_conserved(self.stack, self.who)
        assert get_store().ledger.account(self.stack.tenant, self.who.subject)["available_fen"] == self.available


def test_money_is_conserved_through_any_sequence_of_withdrawal_events(stack: Stack) -> None:
    from chalicelib.wechat import get_transfer

    WithdrawalMachine.stack = stack
    WithdrawalMachine.finance = stack.principal("finance", Role.FINANCE)
    WithdrawalMachine.sandbox = get_transfer(stack.tenant)
    withdrawals.set_rules(WithdrawalMachine.finance, OPEN_RULES)
    run_state_machine_as_test(
        WithdrawalMachine,
        settings=settings(
            max_examples=6,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
