"""Request bodies: strict, unknown fields refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from chalicelib.catalog import MAX_COUPON_PRODUCTS, MAX_PER_USER_LIMIT, MAX_PRICE_FEN, MAX_TOTAL_LIMIT

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoginBody(Body):
    code: Code
    appid: Id | None = None
    name: Short | None = None


class AdminLoginBody(Body):
    username: Short
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    appid: Id | None = None


class ShareBody(Body):
    product_id: Id | None = None
    channel: Short | None = None
    coupon_id: Id | None = None


class ScanBody(Body):
    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class RebindBody(Body):
    parent_id: Id
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class OrderLineBody(Body):
    product_id: Id
    qty: int


class OrderBody(Body):
    lines: list[OrderLineBody]
    share_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None = None
    coupon_id: Id | None = None


class RefundBody(Body):
    amount_fen: int
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class WithdrawalBody(Body):
    amount_fen: Annotated[int, Field(gt=0, le=10**10)]
    real_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None = None


class RejectBody(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _iso_with_offset(value: object) -> object:
    """An ISO-8601 date-time string with a UTC offset (`Z` or `+08:00`), as aware UTC."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time, e.g. 2026-11-11T00:00:00+08:00") from None
    if moment.tzinfo is None:
        raise ValueError("must carry a UTC offset, e.g. +08:00 or Z")
    return moment.astimezone(UTC)


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_with_offset)]
Fen = Annotated[int, Field(ge=0, le=MAX_PRICE_FEN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class ProductUpdateBody(Body):
    name: Name
    price_fen: Annotated[int, Field(gt=0, le=MAX_PRICE_FEN)]
    repurchase_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    active: bool = True


class ProductBody(ProductUpdateBody):
    id: Id


class CouponBody(Body):
    id: Id | None = None
    name: Name
    threshold_fen: Fen
    amount_fen: Annotated[int, Field(gt=0, le=MAX_PRICE_FEN)]
    valid_from: IsoDateTime
    valid_until: IsoDateTime
    per_user_limit: Annotated[int, Field(ge=1, le=MAX_PER_USER_LIMIT)] = 1
    total_limit: Annotated[int, Field(ge=1, le=MAX_TOTAL_LIMIT)] | None = None
    product_ids: Annotated[list[Id], Field(max_length=MAX_COUPON_PRODUCTS)] = []
