"""Ranges of a tenant's local days as routes take them (`chalicelib.local_days`)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib import local_days
from chalicelib.errors import InvalidInput

pytestmark = pytest.mark.unit

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 29)


@pytest.mark.parametrize(
    "value",
    ["20261129", "2026-W48-7", "2026-11-31", "2026-1-2", "29/11/2026", " 2026-11-29", "9999-12-31", "0001-01-03"],
)
def test_a_date_is_written_exactly_yyyy_mm_dd(value: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        local_days.parse(value)
    assert raised.value.code == "invalid_date"


def test_a_missing_or_empty_date_is_none() -> None:
    assert local_days.parse(None) is None
    assert local_days.parse("") is None
    assert local_days.parse("2026-11-29") == TODAY


def test_without_today_missing_ends_stay_open() -> None:
    assert local_days.chosen(None, "2026-11-29") == local_days.Days(None, TODAY)
    start, end = local_days.chosen(None, None).instants(SHANGHAI)
    assert start is None and end is None


def test_with_today_a_missing_range_is_the_week_up_to_today() -> None:
    assert local_days.chosen(None, None, today=TODAY) == local_days.Days(date(2026, 11, 23), TODAY)
    assert local_days.chosen(None, "2026-11-10", today=TODAY) == local_days.Days(date(2026, 11, 4), date(2026, 11, 10))
    assert local_days.chosen("2026-11-28", None, today=TODAY) == local_days.Days(date(2026, 11, 28), TODAY)


def test_from_after_to_and_too_many_days_are_refused() -> None:
    with pytest.raises(InvalidInput) as reversed_range:
        local_days.chosen("2026-11-29", "2026-11-28")
    assert reversed_range.value.code == "invalid_range"
    assert local_days.chosen("2026-11-01", "2026-11-30", max_days=30).last == date(2026, 11, 30)
    with pytest.raises(InvalidInput) as too_long:
        local_days.chosen("2026-11-01", "2026-12-01", max_days=30)
    assert too_long.value.code == "range_too_long"


def test_local_days_span_from_local_midnight_to_the_one_after_the_last_day() -> None:
    start, end = local_days.chosen("2026-11-29", "2026-11-29").bounds(SHANGHAI)
    assert start.astimezone(UTC) == datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="open range"):
        local_days.chosen(None, "2026-11-29").bounds(SHANGHAI)


@pytest.mark.parametrize(("first", "last"), [("1900-01-01", "9998-12-31"), (None, "1900-01-01"), ("9998-12-31", None)])
def test_the_extreme_dates_allowed_still_have_instants(first: str | None, last: str | None) -> None:
    chosen = local_days.chosen(first, last, today=date(2026, 11, 29) if first is None else None)
    start, end = chosen.instants(SHANGHAI)
    for moment in (start, end):
        if moment is not None:
            moment.astimezone(UTC)  # no OverflowError
