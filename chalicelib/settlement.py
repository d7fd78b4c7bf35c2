"""Settlement (结算) rules: when frozen commission becomes available. Pure, no I/O.

Receipt starts the return window; commission stays frozen until the window has passed and,
for batch settlement, until the next batch boundary in the tenant's timezone: Monday 00:00
(weekly) or the 1st 00:00 (monthly).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from chalicelib.commission import SettlementMode


def due_at(received_at: datetime, mode: SettlementMode, window_days: int, timezone: str) -> datetime:
    """When commission of an order received at `received_at` becomes available (aware UTC)."""
    if received_at.tzinfo is None:
        raise ValueError("received_at needs a timezone")
    earliest = received_at + timedelta(days=window_days)
    if mode is SettlementMode.DAYS_AFTER_RECEIPT:
        return earliest
    local = earliest.astimezone(ZoneInfo(timezone))
    midnight = datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)
    if mode is SettlementMode.WEEKLY:
        boundary = midnight + timedelta(days=(7 - midnight.weekday()) % 7)
        if boundary < local:
            boundary += timedelta(days=7)
    else:
        boundary = midnight.replace(day=1)
        if boundary < local:
            boundary = (boundary + timedelta(days=32)).replace(day=1)
    return boundary.astimezone(received_at.tzinfo)


def is_due(frozen_until: datetime, now: datetime) -> bool:
    return frozen_until <= now
