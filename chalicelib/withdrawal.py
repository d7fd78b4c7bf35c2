"""Withdrawal (提现) rules: what a withdrawal may be (the tenant's limits and fee), its state
machine, how each move shifts money between account buckets, and what to do with WeChat's
answers about its transfer bill. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.errors import InvalidInput
from chalicelib.money import apply_bps, format_yuan


class WithdrawalState(StrEnum):
    REQUESTED = "requested"  # waiting for review
    APPROVED = "approved"  # waiting for the payout run
    SENDING = "sending"  # handed to WeChat, its answer not recorded yet
    PROCESSING = "processing"  # WeChat accepted the bill and is transferring
    WAIT_USER_CONFIRM = "wait_user_confirm"  # the user confirms in the mini-program
    PAID = "paid"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


FINAL = frozenset({WithdrawalState.PAID, WithdrawalState.FAILED, WithdrawalState.REJECTED, WithdrawalState.CANCELLED})
IN_FLIGHT = frozenset({WithdrawalState.SENDING, WithdrawalState.PROCESSING, WithdrawalState.WAIT_USER_CONFIRM})
RETURNS_MONEY = frozenset({WithdrawalState.FAILED, WithdrawalState.REJECTED, WithdrawalState.CANCELLED})

# What people and jobs may do, from which states (provider answers are `provider_target`).
TRANSITIONS: dict[str, dict[WithdrawalState, WithdrawalState]] = {
    "approve": {WithdrawalState.REQUESTED: WithdrawalState.APPROVED},
    "reject": {WithdrawalState.REQUESTED: WithdrawalState.REJECTED, WithdrawalState.APPROVED: WithdrawalState.REJECTED},
    "cancel": {
        WithdrawalState.REQUESTED: WithdrawalState.CANCELLED,
        WithdrawalState.APPROVED: WithdrawalState.CANCELLED,
    },
    "send": {WithdrawalState.APPROVED: WithdrawalState.SENDING},
}

_PROVIDER_STATES = {
    "ACCEPTED": WithdrawalState.PROCESSING,
    "PROCESSING": WithdrawalState.PROCESSING,
    "TRANSFERING": WithdrawalState.PROCESSING,
    "CANCELING": WithdrawalState.PROCESSING,
    "WAIT_USER_CONFIRM": WithdrawalState.WAIT_USER_CONFIRM,
    "SUCCESS": WithdrawalState.PAID,
    "FAIL": WithdrawalState.FAILED,
    "CANCELLED": WithdrawalState.FAILED,
}


def provider_target(provider_state: str) -> WithdrawalState:
    """Our state for a WeChat transfer bill state (an unknown state counts as still processing)."""
    return _PROVIDER_STATES.get(provider_state, WithdrawalState.PROCESSING)


# How far along WeChat's bill states are: ACCEPTED → PROCESSING → WAIT_USER_CONFIRM → TRANSFERING
# (or CANCELING) → SUCCESS / FAIL / CANCELLED. A bill never goes back.
_PROVIDER_RANK = {
    "ACCEPTED": 0,
    "PROCESSING": 1,
    "WAIT_USER_CONFIRM": 2,
    "TRANSFERING": 3,
    "CANCELING": 3,
    "SUCCESS": 4,
    "FAIL": 4,
    "CANCELLED": 4,
}


def provider_may_move(
    current: WithdrawalState,
    target: WithdrawalState,
    *,
    news: bool = False,
    recorded: str | None = None,
    answered: str | None = None,
) -> bool:
    """A provider answer moves a withdrawal in flight to another state, or records news in the
    same state (a new provider state, a new package_info); nothing moves a final one, and an
    answer about a withdrawal not sent yet is not ours to apply. An answer older than what was
    recorded (bill state `answered` behind `recorded`, e.g. a delayed PROCESSING after
    WAIT_USER_CONFIRM) is stale and moves nothing: the bill never goes back."""
    if (
        recorded in _PROVIDER_RANK
        and answered in _PROVIDER_RANK
        and (_PROVIDER_RANK[answered] < _PROVIDER_RANK[recorded])
    ):
        return False
    return current in IN_FLIGHT and (target != current or news)


def bill_disagreements(w: Withdrawal, target: WithdrawalState, amount_fen: int | None, openid: str | None) -> list[str]:
    """What a WeChat answer about `w`'s bill says that contradicts our records: another amount
    than the net we sent, another payee, or another final state than the one we recorded. Such an
    answer is never applied (the operator looks at it); an empty list means it may be."""
    problems = []
    if amount_fen is not None and amount_fen != w.net_fen:
        problems.append("amount")
    if openid and openid != w.openid:
        problems.append("openid")
    if w.final and target in FINAL and target is not w.state:
        problems.append("state")
    return problems


def account_moves(target: WithdrawalState, amount_fen: int) -> dict[str, int]:
    """Account deltas of a withdrawal reaching `target` (the request itself reserved the amount:
    available → withdrawing). Paid moves it on to paid; a failure, rejection or cancellation
    returns it to available. Every other move leaves the money where it is."""
    if target is WithdrawalState.PAID:
        return {"withdrawing_fen": -amount_fen, "paid_fen": amount_fen}
    if target in RETURNS_MONEY:
        return {"withdrawing_fen": -amount_fen, "available_fen": amount_fen}
    return {}


RESERVE = {"available_fen": -1, "withdrawing_fen": 1}  # per fen requested


def reserve_moves(amount_fen: int) -> dict[str, int]:
    """Account deltas of requesting a withdrawal: the amount moves from available to withdrawing
    (the write that applies them also checks that available covers it)."""
    return {bucket: per_fen * amount_fen for bucket, per_fen in RESERVE.items()}


def gives_back_day(target: WithdrawalState, requested_day: str, today: str) -> bool:
    """A withdrawal that ends without paying (failed, rejected, cancelled) on the tenant's
    calendar day it was requested on stops counting towards that day's limits (count and amount);
    once the day changed its limits are spent and there is nothing to give back."""
    return target in RETURNS_MONEY and requested_day == today


# --- a bill WeChat does not know (NOT_FOUND) ---------------------------------------------------
#
# WeChat dedupes transfer bills by out_bill_no (= the withdrawal id, never another one for the
# same withdrawal), so any number of create calls make at most one bill. A create call that was
# refused or never answered may still be taking effect for a while, concurrently with our query;
# but a bill that is still not found on a second query more than NOT_FOUND_WINDOW after the last
# create attempt (every attempt is recorded before the call, and a call cannot outlive its Lambda
# by 30 minutes) can no longer appear. Only then does the money go back.

NOT_FOUND_WINDOW = timedelta(minutes=30)
NOT_FOUND_QUERIES = 2  # NOT_FOUND answers needed (since the last create attempt) before giving up
MAX_CREATE_ATTEMPTS = 6  # create calls for one withdrawal (unclear answers, crashes, redeliveries)


class BillNotFound(StrEnum):
    """What to do when WeChat answers NOT_FOUND for a withdrawal's bill."""

    RESEND = "resend"  # never refused, attempts left: create it again (same out_bill_no)
    WAIT = "wait"  # note the answer; the reconciliation job asks again later
    ABANDON = "abandon"  # the bill can no longer appear: the withdrawal fails, the money returns
    MISMATCH = "mismatch"  # WeChat showed us this bill before: an operator must look at it


def after_not_found(w: Withdrawal, now: datetime) -> BillNotFound:
    """The decision for a NOT_FOUND answer to a query of `w`'s bill, asked at `now`."""
    if w.state is not WithdrawalState.SENDING or w.provider_state:
        return BillNotFound.MISMATCH
    if w.refusal is None and w.attempts < MAX_CREATE_ATTEMPTS:
        return BillNotFound.RESEND
    last_create = w.create_at or w.sent_at or w.updated_at
    if w.not_found + 1 >= NOT_FOUND_QUERIES and now - last_create > NOT_FOUND_WINDOW:
        return BillNotFound.ABANDON
    return BillNotFound.WAIT


@dataclass(frozen=True, slots=True)
class WithdrawalRules:
    """A tenant's withdrawal rules (operators change them through the admin API)."""

    min_fen: int = 100  # 1 yuan
    max_per_day_fen: int = 2_000_000  # 20,000 yuan
    count_per_day: int = 3
    fee_bps: int = 0
    fee_fixed_fen: int = 0
    auto_approve_below_fen: int = 0  # 0: every withdrawal is reviewed
    real_name_from_fen: int = 200_000  # WeChat requires the payee's real name from 2,000 yuan

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


WECHAT_MIN_TRANSFER_FEN = 10  # 0.1 yuan
WECHAT_REAL_NAME_FEN = 200_000

RULE_BOUNDS = {  # each rule an operator may set: its lowest and highest value
    "min_fen": (WECHAT_MIN_TRANSFER_FEN, 100_000_000),
    "max_per_day_fen": (WECHAT_MIN_TRANSFER_FEN, 100_000_000),
    "count_per_day": (1, 1000),
    "fee_bps": (0, 5000),
    "fee_fixed_fen": (0, 100_000),
    "auto_approve_below_fen": (0, 100_000_000),
    "real_name_from_fen": (1, WECHAT_REAL_NAME_FEN),
}


def parse_rules(data: Mapping[str, Any], base: WithdrawalRules | None = None) -> WithdrawalRules:
    """Rules from operator input (a partial update of `base`), or an InvalidInput naming each problem."""
    values = (base or WithdrawalRules()).as_dict()
    problems: list[dict[str, str]] = []
    for name, value in data.items():
        if name not in RULE_BOUNDS:
            problems.append({"field": name, "message": "unknown rule"})
            continue
        low, high = RULE_BOUNDS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append({"field": name, "message": f"must be an integer from {low} to {high}"})
            continue
        values[name] = value
    rules = WithdrawalRules(**values)
    if not problems and fee(rules, rules.min_fen) > rules.min_fen - WECHAT_MIN_TRANSFER_FEN:
        problems.append({"field": "fee_fixed_fen", "message": "the fee would leave less than 0.1 yuan of the minimum"})
    if not problems and rules.min_fen > rules.max_per_day_fen:
        problems.append({"field": "min_fen", "message": "the minimum is above the daily maximum"})
    if problems:
        raise InvalidInput("the withdrawal rules are invalid", code="invalid_rules", details=problems)
    return rules


def fee(rules: WithdrawalRules, amount_fen: int) -> int:
    """The fee on a withdrawal: basis points rounded down, plus the fixed part."""
    return apply_bps(amount_fen, rules.fee_bps) + rules.fee_fixed_fen


@dataclass(frozen=True, slots=True)
class Quote:
    amount_fen: int
    fee_fen: int
    net_fen: int  # what reaches the wallet
    real_name_required: bool
    auto_approved: bool


def quote(rules: WithdrawalRules, amount_fen: int) -> Quote:
    """What a withdrawal of `amount_fen` costs, or an InvalidInput saying which rule it breaks."""
    if amount_fen < rules.min_fen:
        raise InvalidInput(f"the minimum withdrawal is {format_yuan(rules.min_fen)} yuan", code="below_minimum")
    if amount_fen > rules.max_per_day_fen:
        raise InvalidInput(f"at most {format_yuan(rules.max_per_day_fen)} yuan a day", code="daily_amount_exceeded")
    charge = fee(rules, amount_fen)
    net = amount_fen - charge
    if net < WECHAT_MIN_TRANSFER_FEN:
        raise InvalidInput("after the fee less than 0.1 yuan would be paid", code="below_minimum")
    return Quote(
        amount_fen=amount_fen,
        fee_fen=charge,
        net_fen=net,
        real_name_required=net >= rules.real_name_from_fen,
        auto_approved=amount_fen < rules.auto_approve_below_fen,
    )


def local_day(now: datetime, timezone: str) -> str:
    """The tenant's calendar day of `now` (daily withdrawal limits reset at local midnight)."""
    return now.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Withdrawal:
    tenant: str
    id: str
    promoter: str
    openid: str
    amount_fen: int
    fee_fen: int
    state: WithdrawalState
    created_at: datetime
    updated_at: datetime
    version: int = 0
    audit_hash: str | None = None
    real_name: str | None = None
    reason: str | None = None
    run_id: str | None = None
    attempts: int = 0
    sent_at: datetime | None = None
    bill_no: str | None = None
    provider_state: str | None = None
    package_info: str | None = None
    fail_reason: str | None = None
    create_at: datetime | None = None  # the last create call of its bill (recorded before the call)
    not_found: int = 0  # NOT_FOUND answers to bill queries since that call
    refusal: str | None = None  # WeChat refused that call (code: message)

    @property
    def net_fen(self) -> int:
        return self.amount_fen - self.fee_fen

    @property
    def final(self) -> bool:
        return self.state in FINAL
