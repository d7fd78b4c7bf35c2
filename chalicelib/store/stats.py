"""Report counters in the stats table: the ADDs a transaction carries, and their reads.

What to count is decided in `chalicelib.counters` (pure); this module turns those deltas into
update actions inside the caller's transaction and reads counters back with one `GetItem`,
`BatchGetItem` or `Query` on the tenant's own keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib import caches
from chalicelib.counters import Deltas
from chalicelib.store.models import ShareModel, StatsModel, TenantModel

_TZ_SECONDS = 60.0
_timezones: dict[str, tuple[str, float]] = caches.register(f"{__name__}._timezones", {})
FIRST_ORDER = "first"  # the period of a buyer's first-order marker (scope buyer#<uid>)


def timezone(tenant: str) -> str:
    """The tenant's timezone (cached for a minute; a missing tenant has the default)."""
    cached = _timezones.get(tenant)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    try:
        zone = str(TenantModel.get(tenant, attributes_to_get=["tenant", "timezone"]).timezone or "Asia/Shanghai")
    except TenantModel.DoesNotExist:
        zone = "Asia/Shanghai"
    _timezones[tenant] = (zone, time.monotonic() + _TZ_SECONDS)
    return zone


def channel(tenant: str, code: str | None) -> str | None:
    """The channel of a share code (None: no share, or a share without a channel)."""
    if not code:
        return None
    try:
        return ShareModel.get(f"{tenant}#{code}", attributes_to_get=["pk", "channel"]).channel
    except ShareModel.DoesNotExist:
        return None


def add(tx: TransactWrite, tenant: str, deltas: Mapping[tuple[str, str], Mapping[str, int]]) -> None:
    """One `ADD` update per counter item, in the caller's transaction."""
    for (scope, period), counters in sorted(deltas.items()):
        actions = [getattr(StatsModel, c).add(d) for c, d in sorted(counters.items()) if d]
        if actions:
            tx.update(StatsModel(f"{tenant}#{scope}", period), actions=actions)


def items(deltas: Deltas) -> int:
    return sum(1 for counters in deltas.values() if counters)


# --- a buyer's first paid order -------------------------------------------------------------


def first_order_of(tenant: str, buyer: str) -> str | None:
    """The id of the buyer's first paid order, if one was counted (strongly consistent)."""
    try:
        item = StatsModel.get(f"{tenant}#buyer#{buyer}", FIRST_ORDER, consistent_read=True)
    except StatsModel.DoesNotExist:
        return None
    return item.ref


def mark_first_order(tx: TransactWrite, tenant: str, buyer: str, order_id: str) -> None:
    """Record the buyer's first paid order, only if none is recorded (else the transaction fails)."""
    item = StatsModel(f"{tenant}#buyer#{buyer}", FIRST_ORDER, ref=order_id)
    tx.save(item, condition=StatsModel.pk.does_not_exist())


# --- reads ----------------------------------------------------------------------------------


def counts_of(item: StatsModel) -> dict[str, int]:
    values: dict[str, int] = {}
    for name, attribute in StatsModel.get_attributes().items():
        if name in ("pk", "period", "ref") or attribute.is_hash_key or attribute.is_range_key:
            continue
        value = getattr(item, name, None)
        if value:
            values[name] = int(value)
    return values


def get_many(tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, int]]:
    """Counters of these (scope, period) items (missing items: empty)."""
    wanted = list(dict.fromkeys(keys))
    found: dict[tuple[str, str], dict[str, int]] = {key: {} for key in wanted}
    for start in range(0, len(wanted), 100):
        page = [(f"{tenant}#{scope}", period) for scope, period in wanted[start : start + 100]]
        for item in StatsModel.batch_get(page):
            found[(item.pk.split("#", 1)[1], item.period)] = counts_of(item)
    return found


def period_range(tenant: str, scope: str, first: str, last: str) -> list[tuple[str, dict[str, int]]]:
    """(period, counters) of a scope's items with `first <= period <= last`, in period order."""
    query = StatsModel.query(f"{tenant}#{scope}", StatsModel.period.between(first, last))
    return [(item.period, counts_of(item)) for item in query]


def raw(tenant: str, scope: str, period: str) -> dict[str, Any]:
    """One item's counters (tests and benchmarks)."""
    return get_many(tenant, [(scope, period)])[(scope, period)]
