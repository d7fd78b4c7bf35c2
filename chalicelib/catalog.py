"""Catalog rules: product ids, coupon templates, and what a coupon takes off an order.

Pure: dataclasses and `datetime` in, decisions out; money is integer fen.

A coupon ("spend 100, save 20", 满减券) applies to the order lines of its products (all lines
when it names none). It takes `amount_fen` off once those lines reach `threshold_fen`, while it
is valid (`valid_from` inclusive, `valid_until` exclusive), and never more than those lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from chalicelib.clock import iso
from chalicelib.entities import CouponTemplate

MAX_PRICE_FEN = 10**9
MAX_PER_USER_LIMIT = 10
MAX_TOTAL_LIMIT = 10**7
MAX_COUPON_PRODUCTS = 50
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_id(value: str) -> bool:
    """A product or coupon id: 1-64 letters, digits, `_` or `-` (safe in keys and paths)."""
    return bool(_ID.fullmatch(value))


def is_valid_at(template: CouponTemplate, at: datetime) -> bool:
    """Whether the coupon can be claimed or redeemed at `at`."""
    return template.valid_from <= at < template.valid_until


def applies_to(template: CouponTemplate, product_id: str) -> bool:
    return not template.product_ids or product_id in template.product_ids


def eligible_amount(template: CouponTemplate, lines: Iterable[tuple[str, int]]) -> int:
    """The part of an order the coupon applies to: the sum of its (product_id, amount_fen) lines."""
    return sum(amount for product_id, amount in lines if applies_to(template, product_id))


def coupon_discount(template: CouponTemplate, eligible_amount_fen: int, at: datetime) -> int:
    """The fen the coupon takes off `eligible_amount_fen` at `at`: 0 when it does not apply.

    Never negative and never more than the eligible amount.
    """
    if isinstance(eligible_amount_fen, bool) or not isinstance(eligible_amount_fen, int):
        raise TypeError("eligible_amount_fen must be an int")
    if not is_valid_at(template, at) or eligible_amount_fen <= 0 or eligible_amount_fen < template.threshold_fen:
        return 0
    return max(0, min(template.amount_fen, eligible_amount_fen))


def template_problems(template: CouponTemplate, now: datetime) -> list[dict[str, str]]:
    """What is wrong with a template created at `now` (`{"field", "message"}` each); empty when fine.

    A coupon with a threshold must take off less than it: "spend 100, save 100" would make
    orders free (and is more likely a slip of units). Free of threshold (`threshold_fen` 0), a
    coupon takes off at most the eligible amount.
    """
    return [
        {"field": field, "message": message}
        for field, message in (*_money(template), *_validity(template, now), *_limits(template))
    ]


Problems = list[tuple[str, str]]


def _money(template: CouponTemplate) -> Problems:
    problems: Problems = []
    if not 0 < template.amount_fen <= MAX_PRICE_FEN:
        problems.append(("amount_fen", f"must be between 1 and {MAX_PRICE_FEN}"))
    if not 0 <= template.threshold_fen <= MAX_PRICE_FEN:
        problems.append(("threshold_fen", f"must be between 0 and {MAX_PRICE_FEN}"))
    elif 0 < template.threshold_fen <= template.amount_fen:
        problems.append(
            ("amount_fen", "must be below threshold_fen (threshold_fen 0 makes a coupon without threshold)")
        )
    return problems


def _validity(template: CouponTemplate, now: datetime) -> Problems:
    naive = [field for field in ("valid_from", "valid_until") if getattr(template, field).tzinfo is None]
    if naive:
        return [(field, "must carry a UTC offset") for field in naive]
    if template.valid_until <= template.valid_from:
        return [("valid_until", "must be after valid_from")]
    if template.valid_until <= now:
        return [("valid_until", "must be in the future")]
    return []


def _limits(template: CouponTemplate) -> Problems:
    problems: Problems = []
    if not 1 <= template.per_user_limit <= MAX_PER_USER_LIMIT:
        problems.append(("per_user_limit", f"must be between 1 and {MAX_PER_USER_LIMIT}"))
    if template.total_limit is not None and not 1 <= template.total_limit <= MAX_TOTAL_LIMIT:
        problems.append(("total_limit", f"must be between 1 and {MAX_TOTAL_LIMIT}"))
    if len(template.product_ids) > MAX_COUPON_PRODUCTS:
        problems.append(("product_ids", f"at most {MAX_COUPON_PRODUCTS} products"))
    if len(set(template.product_ids)) != len(template.product_ids):
        problems.append(("product_ids", "names a product twice"))
    if not all(valid_id(p) for p in template.product_ids):
        problems.append(("product_ids", "holds an invalid product id"))
    return problems


def template_fields(template: CouponTemplate) -> dict[str, Any]:
    """A template's fields as JSON values (stored, audited and shown alike)."""
    return {
        "name": template.name,
        "threshold_fen": template.threshold_fen,
        "amount_fen": template.amount_fen,
        "valid_from": iso(template.valid_from),
        "valid_until": iso(template.valid_until),
        "per_user_limit": template.per_user_limit,
        "total_limit": template.total_limit,
        "product_ids": list(template.product_ids),
    }
