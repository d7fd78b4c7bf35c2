"""Money is integer fen, rates are integer basis points, and every line rounds down."""

from __future__ import annotations

BPS_DENOMINATOR = 10_000


def apply_bps(amount_fen: int, rate_bps: int) -> int:
    """`amount_fen * rate_bps / 10000`, rounded down, for non-negative integers only."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise TypeError("amount_fen must be an int")
    if isinstance(rate_bps, bool) or not isinstance(rate_bps, int):
        raise TypeError("rate_bps must be an int")
    if amount_fen < 0 or rate_bps < 0:
        raise ValueError("amount and rate must not be negative")
    return amount_fen * rate_bps // BPS_DENOMINATOR


def format_yuan(amount_fen: int) -> str:
    """Fen as a yuan string for people, e.g. 12345 -> '123.45'."""
    sign = "-" if amount_fen < 0 else ""
    whole, cents = divmod(abs(amount_fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def format_decimal(value: int, scale: int) -> str:
    """`value / scale` as a short decimal string without floats, e.g. (1550, 100) -> '15.5'."""
    sign = "-" if value < 0 else ""
    whole, rest = divmod(abs(value), scale)
    digits = len(str(scale)) - 1
    fraction = str(rest).rjust(digits, "0").rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def format_bps(rate_bps: int) -> str:
    """Basis points as a percentage for people, e.g. 1550 -> '15.5%'."""
    return format_decimal(rate_bps, 100) + "%"
