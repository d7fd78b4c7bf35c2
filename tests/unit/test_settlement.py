"""Settlement dates: N days after receipt, or the next Monday / 1st at 00:00 in Shanghai."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.commission import SettlementMode
from chalicelib.settlement import due_at, is_due

SH = ZoneInfo("Asia/Shanghai")


def test_days_after_receipt() -> None:
    received = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert due_at(received, SettlementMode.DAYS_AFTER_RECEIPT, 7, "Asia/Shanghai") == received + timedelta(days=7)


@pytest.mark.parametrize(
    ("received_local", "expected_local"),
    [
        (datetime(2026, 11, 22, 20, 0, tzinfo=SH), datetime(2026, 11, 23, 0, 0, tzinfo=SH)),  # Sunday evening
        (datetime(2026, 11, 23, 0, 0, tzinfo=SH), datetime(2026, 11, 23, 0, 0, tzinfo=SH)),  # Monday 00:00 sharp
        (datetime(2026, 11, 23, 0, 0, 1, tzinfo=SH), datetime(2026, 11, 30, 0, 0, tzinfo=SH)),  # a second later
        # Sunday 23:30 in Shanghai is still Sunday 15:30 in UTC: the boundary is Shanghai's
        (datetime(2026, 11, 29, 23, 30, tzinfo=SH), datetime(2026, 11, 30, 0, 0, tzinfo=SH)),
    ],
)
def test_weekly_batches_settle_on_monday_midnight_in_the_tenants_timezone(
    received_local: datetime, expected_local: datetime
) -> None:
    due = due_at(received_local.astimezone(UTC), SettlementMode.WEEKLY, 0, "Asia/Shanghai")
    assert due == expected_local
    assert due.astimezone(SH).weekday() == 0


@pytest.mark.parametrize(
    ("received_local", "window", "expected_local"),
    [
        (datetime(2026, 11, 30, 23, 30, tzinfo=SH), 0, datetime(2026, 12, 1, 0, 0, tzinfo=SH)),
        (datetime(2026, 12, 1, 0, 0, tzinfo=SH), 0, datetime(2026, 12, 1, 0, 0, tzinfo=SH)),
        (datetime(2026, 12, 24, 23, 0, tzinfo=SH), 7, datetime(2027, 1, 1, 0, 0, tzinfo=SH)),  # across the year
        (datetime(2026, 12, 26, 12, 0, tzinfo=SH), 7, datetime(2027, 2, 1, 0, 0, tzinfo=SH)),
    ],
)
def test_monthly_batches_settle_on_the_first_in_the_tenants_timezone(
    received_local: datetime, window: int, expected_local: datetime
) -> None:
    assert due_at(received_local.astimezone(UTC), SettlementMode.MONTHLY, window, "Asia/Shanghai") == expected_local


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        due_at(datetime(2026, 1, 1), SettlementMode.WEEKLY, 0, "Asia/Shanghai")


@given(
    received=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    window=st.integers(0, 60),
    mode=st.sampled_from(list(SettlementMode)),
)
def test_never_before_the_window_and_at_most_a_batch_later(
    received: datetime, window: int, mode: SettlementMode
) -> None:
    due = due_at(received, mode, window, "Asia/Shanghai")
    earliest = received + timedelta(days=window)
    assert earliest <= due
    assert due - earliest <= timedelta(days=31)
    assert is_due(due, due)
    assert not is_due(due, due - timedelta(microseconds=1))
