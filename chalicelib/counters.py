"""Report counters (pure, no I/O): which items of the stats table a change adds to, and how much.

Counters are written with `ADD` in the same transaction as the write they count (an order's
version, a user's audit record, a ledger write, a withdrawal's move), so a replayed stream batch
or a retried request, which cannot repeat that write, counts nothing twice. Reads are one
`GetItem` or one `Query` on the tenant's or the promoter's own keys: cost never grows with the
size of a team. Items (`tenant#<scope>`, `<period>`):

* `day`, `YYYY-MM-DD` (the tenant's day): orders, paid_fen, first_orders (on payment);
  refunds_fen (a refund requested +, failed at WeChat -); commission_fen_1..3 (every ledger line
  on the day it is written, refund adjustments included); new_bindings, scans (a binding through
  a share code), new_promoters; withdrawals_fen (requested), payouts_fen (paid out).
* `p#<promoter>`, `YYYY-MM` and `all`: team_1..3 (`all`: the team now; a month: who joined that
  level in it); in the months only: orders_1..3, sales_fen_1..3, commission_fen_1..3 of the
  orders the promoter earns on at that level, counted in the month the commission was created
  and kept net of refunds (an order refunded in full stops counting as an order). Nothing reads
  lifetime totals of these, so they are not kept: each would be one more item in every
  commission transaction (2 write units each), and a month's Query adds them up if ever needed.
* `src#<by>`, `YYYY-MM-DD#<key>` for by = channel (the share's channel, `direct` without a share),
  product, promoter (the level-1 promoter): orders and paid_fen on the day of payment,
  commission_fen (all levels) on the day each line is written; a product gets its share of an
  order's commission in proportion to its paid amount.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.referral import MAX_LEVELS

Deltas = dict[tuple[str, str], dict[str, int]]  # (scope, period) -> counter -> delta

DAY = "day"
ALL = "all"
SOURCE_KINDS = ("channel", "product", "promoter")
DIRECT = "direct"


def day_of(at: datetime, timezone: str) -> str:
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d")


def month_of(at: datetime, timezone: str) -> str:
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def promoter_scope(uid: str) -> str:
    return f"p#{uid}"


def source_scope(by: str) -> str:
    return f"src#{by}"


def add(deltas: Deltas, scope: str, period: str, counter: str, delta: int) -> None:
    """Add `delta` to a counter (zero deltas are left out: nothing to write)."""
    if delta == 0:
        return
    counters = deltas.setdefault((scope, period), {})
    counters[counter] = counters.get(counter, 0) + delta
    if counters[counter] == 0:
        del counters[counter]
        if not counters:
            del deltas[(scope, period)]


def add_all(deltas: Deltas, more: Mapping[tuple[str, str], Mapping[str, int]]) -> None:
    """Add every counter of `more` to `deltas`, in place."""
    for (scope, period), counters in more.items():
        for counter, delta in counters.items():
            add(deltas, scope, period, counter, delta)


def merged(*many: Mapping[tuple[str, str], Mapping[str, int]]) -> Deltas:
    out: Deltas = {}
    for deltas in many:
        add_all(out, deltas)
    return out


def split(amount: int, weights: Sequence[int]) -> list[int]:
    """`amount` shared in proportion to `weights` (largest remainder, ties to the first): the
    parts always add up to `amount`; a negative amount is split like its opposite."""
    if not weights:
        return []
    sign, whole = (-1, -amount) if amount < 0 else (1, amount)
    total = sum(max(w, 0) for w in weights)
    if total == 0:
        return [sign * whole] + [0] * (len(weights) - 1)
    parts = [whole * max(w, 0) // total for w in weights]
    rests = sorted(range(len(weights)), key=lambda i: (-(whole * max(weights[i], 0) % total), i))
    for i in rests[: whole - sum(parts)]:
        parts[i] += 1
    return [sign * p for p in parts]


@dataclass(frozen=True, slots=True)
class Sources:
    """Where an order came from: its share's channel, its level-1 promoter, its products."""

    channel: str = DIRECT
    level1: str | None = None
    products: tuple[tuple[str, int], ...] = ()  # (product id, paid fen) per line

    @classmethod
    def of(
        cls, share_code: str | None, channel: str | None, upline: Sequence[str], lines: Iterable[tuple[str, int]]
    ) -> Sources:
        """An order's sources: a share without a channel counts as `share`, no share as `direct`."""
        name = channel or ("share" if share_code else DIRECT)
        return cls(name, upline[0] if upline else None, tuple(lines))

    def add(self, deltas: Deltas, day: str, counter: str, amount: int, *, by_product: bool = False) -> None:
        """Add `amount` to `counter` of the order's channel and promoter on `day`; to its products,
        each line's paid amount (`by_product`) or its proportional share of `amount`."""
        add(deltas, source_scope("channel"), f"{day}#{self.channel}", counter, amount)
        if self.level1:
            add(deltas, source_scope("promoter"), f"{day}#{self.level1}", counter, amount)
        if by_product:
            for product, paid in self.products:
                add(deltas, source_scope("product"), f"{day}#{product}", counter, paid)
            return
        for (product, _), part in zip(self.products, split(amount, [p for _, p in self.products]), strict=True):
            add(deltas, source_scope("product"), f"{day}#{product}", counter, part)

    def count_order(self, deltas: Deltas, day: str) -> None:
        add(deltas, source_scope("channel"), f"{day}#{self.channel}", "orders", 1)
        if self.level1:
            add(deltas, source_scope("promoter"), f"{day}#{self.level1}", "orders", 1)
        for product in dict.fromkeys(p for p, _ in self.products):
            add(deltas, source_scope("product"), f"{day}#{product}", "orders", 1)


# --- orders ---------------------------------------------------------------------------------


def order_paid(amount_fen: int, at: datetime, timezone: str, sources: Sources, *, first_order: bool) -> Deltas:
    """An order was paid: a paid order on the day, its amount, its sources; the buyer's first?"""
    deltas: Deltas = {}
    day = day_of(at, timezone)
    add(deltas, DAY, day, "orders", 1)
    add(deltas, DAY, day, "paid_fen", amount_fen)
    add(deltas, DAY, day, "first_orders", int(first_order))
    sources.count_order(deltas, day)
    sources.add(deltas, day, "paid_fen", amount_fen, by_product=True)
    return deltas


def order_refund(action: str, data: Mapping[str, Any], late_payment: bool, at: datetime, timezone: str) -> Deltas:
    """Refunds on the day: a requested refund adds its amount, one that failed at WeChat takes it
    back. A late payment's refund counts nowhere: its payment never counted either."""
    deltas: Deltas = {}
    amount = int(data.get("amount_fen") or 0)
    if late_payment:
        return deltas
    if action == "order.refunded":
        add(deltas, DAY, day_of(at, timezone), "refunds_fen", amount)
    elif action == "order.refund_failed":
        add(deltas, DAY, day_of(at, timezone), "refunds_fen", -amount)
    return deltas


# --- commission -----------------------------------------------------------------------------


def commission(
    deltas: Deltas, promoter: str, level: int, *, amount: int, day: str, month: str, net_delta: int, orders_delta: int
) -> None:
    """A commission line (or adjustment) of `amount` at `level` for `promoter` written on `day`,
    for an order whose commission was created in `month`; the order's net paid amount and its
    counting as an order changed by `net_delta` and `orders_delta` for this promoter."""
    add(deltas, DAY, day, f"commission_fen_{level}", amount)
    scope = promoter_scope(promoter)
    add(deltas, scope, month, f"commission_fen_{level}", amount)
    add(deltas, scope, month, f"sales_fen_{level}", net_delta)
    add(deltas, scope, month, f"orders_{level}", orders_delta)


# --- users ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserVersion:
    """One version of a user as the users stream sees it, next to the one before it."""

    action: str
    data: Mapping[str, Any]
    at: datetime
    upline: tuple[str, ...]
    previous_upline: tuple[str, ...]
    promoter: bool
    was_promoter: bool  # False for a user's first version


def user_version(version: UserVersion, timezone: str) -> Deltas:
    """Team sizes follow the upline: each promoter the user leaves at a level loses one there,
    each it joins gains one (and counts as joined that month). Because every change of an upline
    is a version of its own (a moved user's downline moves one version per user), counting each
    version's difference keeps every team size equal to the users now below at that level."""
    deltas: Deltas = {}
    day, month = day_of(version.at, timezone), month_of(version.at, timezone)
    for level in range(1, MAX_LEVELS + 1):
        before = version.previous_upline[level - 1] if level <= len(version.previous_upline) else None
        after = version.upline[level - 1] if level <= len(version.upline) else None
        if before == after:
            continue
        if before is not None:
            add(deltas, promoter_scope(before), ALL, f"team_{level}", -1)
        if after is not None:
            add(deltas, promoter_scope(after), ALL, f"team_{level}", 1)
            add(deltas, promoter_scope(after), month, f"team_{level}", 1)
    if version.action == "user.bound":
        add(deltas, DAY, day, "new_bindings", 1)
        add(deltas, DAY, day, "scans", int(bool(version.data.get("share"))))
    elif version.action == "user.bind_reverted":
        add(deltas, DAY, day, "new_bindings", -1)
    if version.promoter and not version.was_promoter:
        add(deltas, DAY, day, "new_promoters", 1)
    return deltas


def scan(at: datetime, timezone: str) -> Deltas:
    """A visit through a share that bound nobody (already bound, refused): one scan of the day."""
    deltas: Deltas = {}
    add(deltas, DAY, day_of(at, timezone), "scans", 1)
    return deltas


# --- withdrawals ----------------------------------------------------------------------------


def withdrawal(counter: str, amount_fen: int, at: datetime, timezone: str) -> Deltas:
    """A withdrawal requested (`withdrawals_fen`) or paid out (`payouts_fen`) on the day."""
    deltas: Deltas = {}
    add(deltas, DAY, day_of(at, timezone), counter, amount_fen)
    return deltas
