"""Money and the per-level split: integer fen, basis points, rounded down, capped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.commission import LevelRates, Line, split
from chalicelib.money import apply_bps, format_yuan


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


def test_beauty_product_split_10_5_2() -> None:
    # A 100-yuan order paid in full: sharer (L1) 10 %, their upline 5 % and 2 %.
    lines = split(10_000, ["sharer", "sharer-up", "sharer-up-up"], LevelRates((1000, 500, 200), cap_bps=2000))
    assert lines == [Line(1, "sharer", 1000), Line(2, "sharer-up", 500), Line(3, "sharer-up-up", 200)]


def test_cap_limits_the_later_levels_and_zero_lines_are_dropped() -> None:
    lines = split(10_000, ["a", "b", "c"], LevelRates((1500, 800, 500), cap_bps=2000))
    assert [line.amount_fen for line in lines] == [1500, 500]


def test_short_chain_pays_only_existing_levels() -> None:
    assert split(10_000, ["a"], LevelRates((1000, 500, 200), cap_bps=10_000)) == [Line(1, "a", 1000)]


@pytest.mark.parametrize(
    ("rates", "cap"), [((), 100), ((1, 2, 3, 4), 100), ((10_001,), 100), ((-1,), 100), ((100,), 10_001)]
)
def test_invalid_rates_are_refused(rates: tuple[int, ...], cap: int) -> None:
    with pytest.raises(ValueError):
        LevelRates(rates, cap)


def test_negative_paid_amount_is_refused() -> None:
    with pytest.raises(ValueError):
        split(-1, ["a"], LevelRates((100,), 100))


@given(
    paid=st.integers(min_value=0, max_value=10**10),
    rates=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=3),
    cap=st.integers(min_value=0, max_value=10_000),
    depth=st.integers(min_value=0, max_value=3),
)
def test_lines_are_positive_rounded_down_and_within_cap_and_paid(
    paid: int, rates: list[int], cap: int, depth: int
) -> None:
    chain = [f"p{i}" for i in range(depth)]
    lines = split(paid, chain, LevelRates(tuple(rates), cap))
    assert all(line.amount_fen > 0 for line in lines)
    assert all(line.amount_fen <= paid * rates[line.level - 1] // 10_000 for line in lines)
    assert sum(line.amount_fen for line in lines) <= paid * cap // 10_000 <= paid
    assert len(lines) <= 3
