"""Commission rules (层级佣金): pure functions, no I/O.

This first version splits one paid amount over the three levels with per-level rates and a
total cap; plans, overrides, ladders and campaigns build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.money import BPS_DENOMINATOR, apply_bps
from chalicelib.referral import MAX_LEVELS


@dataclass(frozen=True, slots=True)
class LevelRates:
    """Rates per level in basis points and the cap on all levels together."""

    rates_bps: tuple[int, ...]
    cap_bps: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.rates_bps) <= MAX_LEVELS:
            raise ValueError("a plan pays one to three levels")
        if any(rate < 0 or rate > BPS_DENOMINATOR for rate in self.rates_bps):
            raise ValueError("each rate is between 0 and 10000 bps")
        if not 0 <= self.cap_bps <= BPS_DENOMINATOR:
            raise ValueError("the cap is between 0 and 10000 bps")


@dataclass(frozen=True, slots=True)
class Line:
    """One level's commission on one amount."""

    level: int
    promoter: str
    amount_fen: int


def split(paid_fen: int, chain: Sequence[str], rates: LevelRates) -> list[Line]:
    """Commission lines for `paid_fen` over `chain` (level 1 first), capped, zero lines dropped.

    Each line rounds down; once the cap is reached the remaining levels get what is left.
    """
    if paid_fen < 0:
        raise ValueError("paid amount must not be negative")
    budget = apply_bps(paid_fen, rates.cap_bps)
    lines: list[Line] = []
    for level, (promoter, rate) in enumerate(zip(chain[:MAX_LEVELS], rates.rates_bps, strict=False), 1):
        amount = min(apply_bps(paid_fen, rate), budget)
        if amount > 0:
            lines.append(Line(level, promoter, amount))
            budget -= amount
    return lines
