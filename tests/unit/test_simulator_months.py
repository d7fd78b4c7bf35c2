"""The plan simulator's month lookup (one `counters.month_of` per quarter hour of UTC) gives the
month `counters.month_of` gives, minute by minute around month starts, in zones whose offsets are
whole hours, half hours and quarter hours (an hourly cache would be wrong in the last two)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chalicelib import counters
from chalicelib.services.simulator import Replay


@pytest.mark.parametrize(
    ("zone", "month_start"),
    [
        ("Asia/Shanghai", datetime(2026, 3, 1)),
        ("Asia/Kolkata", datetime(2026, 7, 1)),  # +05:30
        ("Asia/Kathmandu", datetime(2026, 11, 1)),  # +05:45
        ("Australia/Eucla", datetime(2026, 1, 1)),  # +08:45
        ("America/Santiago", datetime(2026, 4, 1)),  # its summer time ends near here
        ("Pacific/Chatham", datetime(2026, 10, 1)),  # +12:45 / +13:45
    ],
)
def test_the_month_of_every_minute_around_a_month_start(zone: str, month_start: datetime) -> None:
    boundary = month_start.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    replay = Replay(plan=None)
    for minute in range(-180, 181):
        at = boundary + timedelta(minutes=minute, seconds=59 if minute % 2 else 0)
        assert replay._month(at, zone) == counters.month_of(at, zone), at
