"""Ranges of a tenant's local days, as routes take them (`from=YYYY-MM-DD&to=YYYY-MM-DD`): one
reading for every route that does (the orders list, the reports, the audit trail, exports).

A date is written exactly `YYYY-MM-DD` (`date.fromisoformat` alone would also take `20261129`
or an ISO week date), `from` is not after `to`, and a route may bound the number of days. A
local day starts at the tenant's local midnight, so its UTC instants follow the timezone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from chalicelib.errors import InvalidInput

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
YEARS = range(1900, 9999)  # beyond, a day's instants (or the week before it) leave what datetime holds
DEFAULT_DAYS = 7  # a range without `from` ends with `to` and spans a week


@dataclass(frozen=True, slots=True)
class Days:
    """Local days `first..last`, both included (None: open at that end)."""

    first: date | None
    last: date | None

    def instants(self, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
        """`[start, end)`: the first day's local midnight and the one after the last day."""
        start = datetime.combine(self.first, time(), zone) if self.first else None
        end = datetime.combine(self.last + timedelta(days=1), time(), zone) if self.last else None
        return start, end

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """`instants` of a range closed at both ends (as `chosen` gives with `today`)."""
        start, end = self.instants(zone)
        if start is None or end is None:
            raise ValueError("an open range of days has no bounds")
        return start, end


def parse(value: str | None) -> date | None:
    """A date written `YYYY-MM-DD`; None when left out (missing or empty)."""
    if not value:
        return None
    try:
        if DATE.fullmatch(value) is None or int(value[:4]) not in YEARS:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("from and to are dates like 2026-11-29", code="invalid_date") from None


def chosen(first: str | None, last: str | None, *, today: date | None = None, max_days: int | None = None) -> Days:
    """The days a request asks for. With `today`, a missing `to` is today and a missing `from` the
    week up to `to`; without it, missing ends stay open. With `max_days`, longer ranges are refused."""
    from_day, to_day = parse(first), parse(last)
    if today is not None:
        to_day = to_day or today
        from_day = from_day or to_day - timedelta(days=DEFAULT_DAYS - 1)
    if from_day is not None and to_day is not None:
        if from_day > to_day:
            raise InvalidInput("from is after to", code="invalid_range")
        if max_days is not None and (to_day - from_day).days + 1 > max_days:
            raise InvalidInput(f"at most {max_days} days at a time", code="range_too_long")
    return Days(from_day, to_day)
