"""Catalog rules: what a coupon takes off an order, and which templates are refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.catalog import (
    MAX_PRICE_FEN,
    applies_to,
    coupon_discount,
    eligible_amount,
    is_valid_at,
    template_problems,
    valid_id,
)
from chalicelib.entities import CouponTemplate

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 12, tzinfo=UTC)
DURING = datetime(2026, 11, 11, 12, tzinfo=UTC)
BEFORE = START - timedelta(days=1)

# "spend 100 yuan, save 20"
SPEND_100_SAVE_20 = CouponTemplate(
    tenant="wx1",
    coupon_id="c1",
    name="满100减20",
    threshold_fen=10_000,
    amount_fen=2_000,
    valid_from=START,
    valid_until=END,
)


def problems(template: CouponTemplate, now: datetime = BEFORE) -> set[tuple[str, str]]:
    return {(p["field"], p["message"]) for p in template_problems(template, now)}


def fields(template: CouponTemplate, now: datetime = BEFORE) -> set[str]:
    return {field for field, _ in problems(template, now)}


# --- discount --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eligible", "at", "expected"),
    [
        (10_000, DURING, 2_000),  # exactly the threshold
        (25_000, DURING, 2_000),  # a fixed amount, whatever the order
        (9_999, DURING, 0),  # one fen short
        (0, DURING, 0),
        (-5, DURING, 0),
        (10_000, START, 2_000),  # valid_from is inclusive
        (10_000, START - timedelta(microseconds=1), 0),
        (10_000, END, 0),  # valid_until is exclusive
        (10_000, END - timedelta(microseconds=1), 2_000),
    ],
)
def test_spend_100_save_20(eligible: int, at: datetime, expected: int) -> None:
    assert coupon_discount(SPEND_100_SAVE_20, eligible, at) == expected


def test_a_coupon_without_threshold_never_takes_off_more_than_the_eligible_amount() -> None:
    no_threshold = replace(SPEND_100_SAVE_20, threshold_fen=0, amount_fen=500)

    assert coupon_discount(no_threshold, 300, DURING) == 300
    assert coupon_discount(no_threshold, 800, DURING) == 500
    assert coupon_discount(no_threshold, 0, DURING) == 0


@pytest.mark.parametrize("amount", [100.0, "100", True, None])
def test_the_eligible_amount_must_be_integer_fen(amount: object) -> None:
    with pytest.raises(TypeError):
        coupon_discount(SPEND_100_SAVE_20, amount, DURING)  # type: ignore[arg-type]


def test_eligible_amount_counts_only_the_coupons_products() -> None:
    lines = [("cream", 6_000), ("serum", 5_000), ("mask", 5_000)]
    beauty = replace(SPEND_100_SAVE_20, product_ids=("cream", "serum"))

    # Given only cream and serum count, the order reaches the threshold with them alone
    assert eligible_amount(beauty, lines) == 11_000
    assert coupon_discount(beauty, eligible_amount(beauty, lines), DURING) == 2_000
    # and without the serum it does not, though the whole order (cream and mask) would
    assert eligible_amount(beauty, lines[::2]) == 6_000
    assert coupon_discount(beauty, eligible_amount(beauty, lines[::2]), DURING) == 0
    # a coupon naming no product applies to every line
    assert eligible_amount(SPEND_100_SAVE_20, lines) == 16_000
    assert applies_to(SPEND_100_SAVE_20, "anything") and not applies_to(beauty, "mask")


def test_is_valid_at_is_half_open() -> None:
    assert is_valid_at(SPEND_100_SAVE_20, START) and not is_valid_at(SPEND_100_SAVE_20, END)


templates = st.builds(
    CouponTemplate,
    tenant=st.just("wx1"),
    coupon_id=st.just("c"),
    name=st.just("x"),
    threshold_fen=st.integers(0, MAX_PRICE_FEN),
    amount_fen=st.integers(1, MAX_PRICE_FEN),
    valid_from=st.datetimes(timezones=st.just(UTC)),
    valid_until=st.datetimes(timezones=st.just(UTC)),
)


@given(template=templates, eligible=st.integers(-(10**12), 10**12), at=st.datetimes(timezones=st.just(UTC)))
def test_a_discount_is_integer_fen_between_zero_and_the_eligible_amount(
    template: CouponTemplate, eligible: int, at: datetime
) -> None:
    discount = coupon_discount(template, eligible, at)

    assert type(discount) is int
    assert 0 <= discount <= max(eligible, 0)
    assert discount <= template.amount_fen
    if not is_valid_at(template, at) or eligible < template.threshold_fen:
        assert discount == 0


@given(template=templates, eligible=st.integers(0, 10**12))
def test_a_valid_coupon_over_its_threshold_takes_off_its_amount_or_everything(
    template: CouponTemplate, eligible: int
) -> None:
    at = template.valid_from
    if template.valid_until > at and eligible >= max(template.threshold_fen, 1):
        assert coupon_discount(template, eligible, at) == min(template.amount_fen, eligible)


# --- templates -------------------------------------------------------------------------------


def test_a_sound_template_has_no_problems() -> None:
    assert problems(SPEND_100_SAVE_20) == set()
    assert problems(replace(SPEND_100_SAVE_20, threshold_fen=0, amount_fen=10_000)) == set()
    limited = replace(SPEND_100_SAVE_20, per_user_limit=10, total_limit=1, product_ids=("a", "b-2"))
    assert problems(limited) == set()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": -1}, "amount_fen"),
        ({"amount_fen": MAX_PRICE_FEN + 1, "threshold_fen": 0}, "amount_fen"),
        ({"amount_fen": 10_000}, "amount_fen"),  # "spend 100, save 100": a free order
        ({"amount_fen": 12_000}, "amount_fen"),
        ({"threshold_fen": -1}, "threshold_fen"),
        ({"threshold_fen": MAX_PRICE_FEN + 1}, "threshold_fen"),
        ({"valid_until": START}, "valid_until"),
        ({"valid_until": START - timedelta(seconds=1)}, "valid_until"),
        ({"valid_from": datetime(2026, 11, 1)}, "valid_from"),  # naive on purpose
        ({"valid_until": datetime(2026, 11, 12)}, "valid_until"),
        ({"per_user_limit": 0}, "per_user_limit"),
        ({"per_user_limit": 11}, "per_user_limit"),
        ({"total_limit": 0}, "total_limit"),
        ({"total_limit": 10**7 + 1}, "total_limit"),
        ({"product_ids": ("a", "a")}, "product_ids"),
        ({"product_ids": ("a b",)}, "product_ids"),
        ({"product_ids": tuple(f"p{i}" for i in range(51))}, "product_ids"),
    ],
)
def test_a_bad_template_is_refused_with_the_field_named(change: dict[str, object], field: str) -> None:
    assert fields(replace(SPEND_100_SAVE_20, **change)) == {field}  # type: ignore[arg-type]


def test_a_template_that_already_ended_is_refused() -> None:
    assert fields(SPEND_100_SAVE_20, now=END) == {"valid_until"}
    assert fields(SPEND_100_SAVE_20, now=DURING) == set()  # started already is fine


def test_every_problem_is_listed_at_once() -> None:
    bad = replace(SPEND_100_SAVE_20, amount_fen=0, per_user_limit=0, valid_until=START)
    assert fields(bad) == {"amount_fen", "per_user_limit", "valid_until"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [("p1", True), ("A_b-9", True), ("x" * 64, True), ("", False), ("x" * 65, False), ("a/b", False), ("é", False)],
)
def test_valid_id(value: str, ok: bool) -> None:
    assert valid_id(value) is ok
