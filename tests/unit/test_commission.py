"""Commission: integer fen, basis points, rounded down per line, capped, reversed exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.commission import (
    Attribution,
    Campaign,
    InactiveUpline,
    LadderTier,
    LevelAmount,
    OrderLine,
    Plan,
    ProductOverride,
    Trigger,
    compute,
    plan_errors,
    remaining_after_refunds,
    worst_case_bps,
)
from chalicelib.money import apply_bps, format_yuan
from tests.unit.test_ledger_events import OrderLife  # at import: its module defines @given tests

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 11, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
PLAN = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000)
CHAIN = Attribution(buyer="buyer", upline=("sharer", "sharer-up", "sharer-up-up"))


def amounts(plan: Plan, lines: list[OrderLine], attribution: Attribution = CHAIN, **kwargs: Any) -> list[int]:
    earnings = compute(
        lines, attribution, plan, at=kwargs.pop("at", AT), month_sales_fen=kwargs.pop("sales", {}), **kwargs
    )
    return [e.amount_fen for e in earnings]


@pytest.mark.parametrize(
    ("amount", "rate", "expected"),
    [(999, 1500, 149), (1000, 5677, 567), (0, 1000, 0), (1, 9999, 0), (10_000, 10_000, 10_000)],
)
def test_apply_bps_rounds_down(amount: int, rate: int, expected: int) -> None:
    assert apply_bps(amount, rate) == expected


@pytest.mark.parametrize(("amount", "rate"), [(1.5, 100), (100, 1.5), (True, 100), (-1, 100), (100, -1)])
def test_apply_bps_refuses_floats_bools_and_negatives(amount: object, rate: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        apply_bps(amount, rate)  # type: ignore[arg-type]


def test_format_yuan() -> None:
    assert format_yuan(12345) == "123.45"
    assert format_yuan(-5) == "-0.05"


@pytest.mark.parametrize(("paid", "rate", "expected"), [(999, 1500, 149), (1000, 5677, 567)])
def test_rounding_vectors_through_a_plan(paid: int, rate: int, expected: int) -> None:
    plan = Plan(version=1, rates_bps=(rate,), cap_bps=10_000)
    assert amounts(plan, [OrderLine("p", 1, paid)], Attribution("b", ("s",))) == [expected]


def test_a_fixed_amount_per_product_is_multiplied_by_quantity() -> None:
    plan = Plan(
        version=1,
        rates_bps=(1000, 500),
        cap_bps=10_000,
        overrides=(ProductOverride("tea", (LevelAmount(fixed_fen=300), LevelAmount(rate_bps=100))),),
    )
    earnings = compute([OrderLine("tea", 4, 8000)], CHAIN, plan, at=AT, month_sales_fen={})
    assert [e.amount_fen for e in earnings] == [1200, 80]
    assert earnings[0].trace.fixed_fen == 1200


def test_a_zero_result_writes_no_line() -> None:
    plan = Plan(version=1, rates_bps=(1000, 0, 200), cap_bps=10_000)
    earnings = compute([OrderLine("p", 1, 9)], CHAIN, plan, at=AT, month_sales_fen={})
    assert earnings == []
    assert [e.level for e in compute([OrderLine("p", 1, 100)], CHAIN, plan, at=AT, month_sales_fen={})] == [1, 3]


def test_beauty_product_with_a_coupon_pays_on_the_amount_actually_paid() -> None:
    # A 120-yuan lipstick with a "spend 100, save 20" coupon: the friend pays 100 yuan.
    paid = 12_000 - 2_000
    earnings = compute([OrderLine("lipstick", 1, paid)], CHAIN, PLAN, at=AT, month_sales_fen={})
    assert [(e.level, e.promoter, e.amount_fen) for e in earnings] == [
        (1, "sharer", 1000),
        (2, "sharer-up", 500),
        (3, "sharer-up-up", 200),
    ]
    assert earnings[0].trace.words() == "base 10000 fen, rate 10%"


def test_the_cap_trims_the_farthest_levels_first() -> None:
    plan = Plan(version=1, rates_bps=(1500, 800, 500), cap_bps=2000)
    earnings = compute([OrderLine("p", 1, 10_000)], CHAIN, plan, at=AT, month_sales_fen={})
    assert [e.amount_fen for e in earnings] == [1500, 500]
    assert earnings[1].trace.capped
    assert "capped from 800 fen" in earnings[1].trace.words()


def test_ladder_tier_switches_on_the_order_that_crosses_the_threshold() -> None:
    plan = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=5000, ladder=(LadderTier(100_000, 1500),))
    line = [OrderLine("p", 1, 10_000)]
    below = compute(line, CHAIN, plan, at=AT, month_sales_fen={"sharer": 99_999})
    crossing = compute(line, CHAIN, plan, at=AT, month_sales_fen={"sharer": 100_000})
    assert below[0].amount_fen == 1000
    assert below[0].trace.ladder_tier is None
    assert crossing[0].amount_fen == 1500
    assert crossing[0].trace.ladder_tier == 1
    assert [e.amount_fen for e in crossing[1:]] == [500, 200]  # the ladder is level 1 only


def test_a_double_commission_campaign_that_starts_and_ends_mid_day_in_shanghai() -> None:
    starts = datetime(2026, 11, 11, 12, 0, tzinfo=SHANGHAI)
    ends = datetime(2026, 11, 11, 18, 0, tzinfo=SHANGHAI)
    plan = Plan(
        version=1, rates_bps=(1000, 500, 200), cap_bps=4000, campaigns=(Campaign("双11", starts, ends, 20_000),)
    )
    line = [OrderLine("p", 1, 10_000)]
    second = timedelta(seconds=1)
    assert amounts(plan, line, at=starts - second) == [1000, 500, 200]
    assert amounts(plan, line, at=starts) == [2000, 1000, 400]
    assert amounts(plan, line, at=ends - second) == [2000, 1000, 400]
    assert amounts(plan, line, at=ends) == [1000, 500, 200]
    assert amounts(plan, line, at=starts.astimezone(UTC)) == [2000, 1000, 400]  # stored in UTC, same instant


def test_a_campaign_limited_to_some_products() -> None:
    campaign = Campaign("tea week", AT - timedelta(days=1), AT + timedelta(days=1), 15_000, frozenset({"tea"}))
    plan = Plan(version=1, rates_bps=(1000,), cap_bps=5000, campaigns=(campaign,))
    lines = [OrderLine("tea", 1, 10_000), OrderLine("cup", 1, 10_000)]
    earnings = compute(lines, Attribution("b", ("s",)), plan, at=AT, month_sales_fen={})
    assert earnings[0].amount_fen == 1500 + 1000
    assert earnings[0].trace.campaign == "tea week"


@pytest.mark.parametrize(
    ("self_purchase", "expected"),
    [(False, [("up1", 1000), ("up2", 500), ("up3", 200)]), (True, [("buyer", 1000), ("up1", 500), ("up2", 200)])],
)
def test_self_purchase_on_and_off(self_purchase: bool, expected: list[tuple[str, int]]) -> None:
    plan = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000, self_purchase=self_purchase)
    attribution = Attribution("buyer", ("up1", "up2", "up3"))
    earnings = compute([OrderLine("p", 1, 10_000)], attribution, plan, at=AT, month_sales_fen={})
    assert [(e.promoter, e.amount_fen) for e in earnings] == expected
    assert earnings[0].trace.self_purchase is self_purchase


def test_self_purchase_needs_the_buyer_to_be_a_promoter() -> None:
    plan = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000, self_purchase=True)
    attribution = Attribution("buyer", ("up1",), buyer_is_promoter=False)
    assert [e.promoter for e in compute([OrderLine("p", 1, 10_000)], attribution, plan, at=AT, month_sales_fen={})] == [
        "up1"
    ]


def test_inactive_uplines_are_skipped_or_compressed() -> None:
    attribution = Attribution("b", ("u1", "gone", "u3"))
    line = [OrderLine("p", 1, 10_000)]

    def active(uid: str) -> bool:
        return uid != "gone"

    skip = compute(line, attribution, PLAN, at=AT, month_sales_fen={}, is_active=active)
    compress_plan = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000, inactive_upline=InactiveUpline.COMPRESS)
    compress = compute(line, attribution, compress_plan, at=AT, month_sales_fen={}, is_active=active)
    assert [(e.level, e.promoter) for e in skip] == [(1, "u1"), (3, "u3")]
    assert [(e.level, e.promoter) for e in compress] == [(1, "u1"), (2, "u3")]


def test_bad_order_lines_are_refused() -> None:
    with pytest.raises(ValueError):
        compute([OrderLine("p", 0, 100)], CHAIN, PLAN, at=AT, month_sales_fen={})


# --- plan validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (Plan(version=1, rates_bps=(100, 100, 100, 100), cap_bps=5000), "never a fourth"),
        (Plan(version=1, rates_bps=(), cap_bps=5000), "never a fourth"),
        (Plan(version=1, rates_bps=(-1,), cap_bps=5000), "between 0 and 10000"),
        (Plan(version=1, rates_bps=(10_001,), cap_bps=10_000), "between 0 and 10000"),
        (Plan(version=1, rates_bps=(100,), cap_bps=10_001), "cap"),
        (Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=1500), "above its cap"),
        (Plan(version=1, rates_bps=(1000,), cap_bps=1200, ladder=(LadderTier(100, 1500),)), "above its cap"),
        (
            Plan(version=1, rates_bps=(1000,), cap_bps=5000, ladder=(LadderTier(100, 1100), LadderTier(100, 1200))),
            "increasing",
        ),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=1500,
                campaigns=(Campaign("x2", AT, AT + timedelta(hours=1), 20_000),),
            ),
            "above its cap",
        ),
        (Plan(version=1, rates_bps=(1000,), cap_bps=5000, campaigns=(Campaign("back", AT, AT, 10_000),)), "end after"),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=5000,
                campaigns=(Campaign("naive", datetime(2026, 1, 1), datetime(2026, 1, 2), 10_000),),
            ),
            "timezone",
        ),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=5000,
                campaigns=(Campaign("x9", AT, AT + timedelta(hours=1), 90_000),),
            ),
            "multiplier",
        ),
        (
            Plan(version=1, rates_bps=(1000,), cap_bps=5000, overrides=(ProductOverride("p", (LevelAmount(),)),)),
            "either",
        ),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=5000,
                overrides=(ProductOverride("p", (LevelAmount(fixed_fen=-1),)),),
            ),
            "negative",
        ),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=5000,
                overrides=(ProductOverride("p", (LevelAmount(rate_bps=1),) * 4),),
            ),
            "never a fourth",
        ),
        (
            Plan(
                version=1,
                rates_bps=(1000,),
                cap_bps=5000,
                overrides=(ProductOverride("p", (LevelAmount(rate_bps=1),)),) * 2,
            ),
            "twice",
        ),
        (Plan(version=1, rates_bps=(1000,), cap_bps=5000, settle_after_days=-1), "settle_after_days"),
    ],
)
def test_plan_validation_refuses(plan: Plan, message: str) -> None:
    assert any(message in error for error in plan_errors(plan)), plan_errors(plan)


def test_a_sound_plan_validates_and_its_worst_case_is_known() -> None:
    plan = Plan(
        version=1,
        rates_bps=(1000, 500, 200),
        cap_bps=4000,
        ladder=(LadderTier(100_000, 1200),),
        campaigns=(Campaign("x1.5", AT, AT + timedelta(hours=1), 15_000),),
        overrides=(ProductOverride("p", (LevelAmount(rate_bps=1500), LevelAmount(fixed_fen=10))),),
    )
    assert plan_errors(plan) == []
    assert worst_case_bps(plan) == (1500 + 500 + 200) * 15_000 // 10_000


# --- properties -----------------------------------------------------------------------------

order_lines = st.lists(
    st.builds(OrderLine, st.sampled_from(["a", "b", "c"]), st.integers(1, 5), st.integers(0, 10**7)),
    min_size=1,
    max_size=4,
)
plans = st.builds(
    Plan,
    version=st.just(1),
    rates_bps=st.lists(st.integers(0, 10_000), min_size=1, max_size=3).map(tuple),
    cap_bps=st.integers(0, 10_000),
    overrides=st.lists(
        st.builds(
            ProductOverride,
            st.sampled_from(["a", "b"]),
            st.lists(
                st.one_of(
                    st.builds(LevelAmount, rate_bps=st.integers(0, 10_000)),
                    st.builds(LevelAmount, fixed_fen=st.integers(0, 10**6)),
                ),
                min_size=1,
                max_size=3,
            ).map(tuple),
        ),
        max_size=1,
    ).map(tuple),
    campaigns=st.lists(
        st.builds(
            Campaign,
            st.just("c"),
            st.just(AT - timedelta(hours=1)),
            st.just(AT + timedelta(hours=1)),
            st.integers(0, 50_000),
        ),
        max_size=2,
    ).map(tuple),
    self_purchase=st.booleans(),
)


@given(lines=order_lines, plan=plans, depth=st.integers(0, 3), sales=st.integers(0, 10**9))
def test_lines_are_positive_within_cap_and_paid_and_never_four(
    lines: list[OrderLine], plan: Plan, depth: int, sales: int
) -> None:
    attribution = Attribution("buyer", tuple(f"p{i}" for i in range(depth)))
    earnings = compute(lines, attribution, plan, at=AT, month_sales_fen=dict.fromkeys(attribution.upline, sales))
    paid = sum(line.paid_fen for line in lines)
    assert all(e.amount_fen > 0 for e in earnings)
    assert sum(e.amount_fen for e in earnings) <= apply_bps(paid, plan.cap_bps) <= paid
    assert len(earnings) <= 3
    assert [e.level for e in earnings] == sorted({e.level for e in earnings})
    assert all(isinstance(e.amount_fen, int) for e in earnings)


@given(original=st.integers(0, 10**9), paid=st.integers(1, 10**9), refunds=st.lists(st.integers(1, 10**8), max_size=6))
def test_what_is_left_of_a_line_shrinks_with_refunds_to_exactly_zero(
    original: int, paid: int, refunds: list[int]
) -> None:
    refunded, left = 0, original
    for refund in refunds:
        refunded += min(refund, paid - refunded)
        now = remaining_after_refunds(original, paid, refunded)
        assert 0 <= now <= left <= original
        assert now * paid <= original * (paid - refunded)  # never more than the remaining amount's share
        left = now
    assert remaining_after_refunds(original, paid, paid) == 0


# Refunds before and after receipt, under both triggers: the order's lines, written by the
# ledger's pure rules (tests/unit/test_ledger_events.py drives them into an in-memory ledger).
refund_lives = st.tuples(
    st.sampled_from(Trigger),
    st.integers(1, 10**7),  # paid fen
    st.lists(st.integers(1, 1000), max_size=4),  # refunds before receipt, per mille of what is left
    st.lists(st.integers(1, 1000), max_size=4),  # refunds after receipt
    st.booleans(),  # the rest is refunded at the end
)


@given(life=refund_lives, rates=st.tuples(st.integers(0, 3000), st.integers(0, 2000), st.integers(0, 1000)))
def test_each_level_sums_to_the_commission_of_the_net_paid_amount_and_a_full_refund_to_zero(
    life: tuple[Trigger, int, list[int], list[int], bool], rates: tuple[int, int, int]
) -> None:
    trigger, paid, before, after, full = life
    order = OrderLife(Plan(version=1, rates_bps=rates, cap_bps=10_000, trigger=trigger), paid)
    order.pay()
    for per_mille in before:
        if order.refunded < paid:
            order.refund(max(1, (paid - order.refunded) * per_mille // 1000))
    order.receive()
    for per_mille in after:
        if order.refunded < paid:
            order.refund(max(1, (paid - order.refunded) * per_mille // 1000))
        order.assert_levels_at_net_commission()
    if full and order.refunded < paid:
        order.refund(paid - order.refunded)
    for earning in order.earnings:  # the commission of the net paid amount, level by level
        expected = remaining_after_refunds(earning.amount_fen, paid, order.refunded)
        assert order.book.level_sum("o1", earning.level) == expected
        if order.refunded == paid:
            assert order.book.level_sum("o1", earning.level) == 0
    order.book.assert_accounts_equal_lines()


@given(paid=st.integers(1, 10**8), rate=st.integers(0, 10_000), refund=st.integers(0, 10**8))
def test_a_partial_refund_never_leaves_more_than_the_remaining_paid_amounts_commission(
    paid: int, rate: int, refund: int
) -> None:
    refund = min(refund, paid)
    original = apply_bps(paid, rate)
    assert remaining_after_refunds(original, paid, refund) <= apply_bps(paid - refund, rate)


def test_the_trace_in_words_names_every_rule_applied() -> None:
    campaign = Campaign("双11", AT - timedelta(hours=1), AT + timedelta(hours=1), 15_000)
    plan = Plan(
        version=1,
        rates_bps=(1000,),
        cap_bps=1600,
        ladder=(LadderTier(0, 1550),),
        campaigns=(campaign,),
        self_purchase=True,
        overrides=(ProductOverride("tea", (LevelAmount(fixed_fen=100),)),),
    )
    lines = [OrderLine("lipstick", 1, 10_000), OrderLine("tea", 2, 500)]
    (earning,) = compute(lines, Attribution("b", ()), plan, at=AT, month_sales_fen={"b": 1})
    assert earning.trace.words() == (
        "base 10500 fen, rate 15.5%, fixed 200 fen, ladder tier 1, campaign 双11 x1.5, self-purchase, "
        "capped from 2625 fen"
    )
    assert earning.amount_fen == 1680 == 10_500 * 1600 // 10_000


@pytest.mark.parametrize(("value", "text"), [(1550, "15.5%"), (1000, "10%"), (1, "0.01%"), (0, "0%"), (-250, "-2.5%")])
def test_format_bps(value: int, text: str) -> None:
    from chalicelib.money import format_bps

    assert format_bps(value) == text


def test_fixed_only_traces_and_refunds_of_nothing() -> None:
    plan = Plan(
        version=1, rates_bps=(1000,), cap_bps=10_000, overrides=(ProductOverride("tea", (LevelAmount(fixed_fen=50),)),)
    )
    (earning,) = compute([OrderLine("tea", 3, 1000)], Attribution("b", ("s",)), plan, at=AT, month_sales_fen={})
    assert earning.trace.words() == "base 1000 fen, fixed 150 fen"
    assert remaining_after_refunds(100, 0, 0) == 0
