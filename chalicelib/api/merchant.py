"""The server-to-server order API for shops and brands that keep their own checkout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from chalice.app import Blueprint, Request
from pydantic import Field, StringConstraints, model_validator

from chalicelib.api.http import handled, parse_body
from chalicelib.api.schemas import Body, Id, IsoDateTime
from chalicelib.catalog import MAX_PRICE_FEN
from chalicelib.services import merchant
from chalicelib.services.orders import MAX_LINES, MAX_QTY

bp = Blueprint(__name__)

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]  # visible ASCII
OpenId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Fen = Annotated[int, Field(ge=1, le=MAX_PRICE_FEN)]


class MerchantLineBody(Body):
    product_id: Ref
    qty: Annotated[int, Field(ge=1, le=MAX_QTY)]
    paid_fen: Annotated[int, Field(ge=0, le=MAX_PRICE_FEN)]


class MerchantEventBody(Body):
    event_id: Id
    type: Literal["paid", "received", "refunded"]
    order_id: Ref
    openid: OpenId
    amount_fen: Fen | None = None
    lines: Annotated[list[MerchantLineBody], Field(min_length=1, max_length=MAX_LINES)] | None = None
    share_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None = None
    occurred_at: IsoDateTime | None = None

    @model_validator(mode="after")
    def _fits_its_type(self) -> Self:
        if self.type != "received" and self.amount_fen is None:
            raise ValueError("amount_fen is required in paid and refunded events")
        if self.type != "paid" and (self.lines is not None or self.share_code is not None):
            raise ValueError("lines and share_code belong to paid events only")
        if self.lines is not None and sum(x.paid_fen for x in self.lines) != self.amount_fen:
            raise ValueError("the lines' paid_fen must add up to amount_fen")
        return self

    def event(self) -> merchant.MerchantEvent:
        return merchant.MerchantEvent(
            event_id=self.event_id,
            type=merchant.EventType(self.type),
            order_id=self.order_id,
            openid=self.openid,
            amount_fen=self.amount_fen,
            lines=tuple(merchant.MerchantLine(x.product_id, x.qty, x.paid_fen) for x in self.lines or ()),
            share_code=self.share_code,
            occurred_at=self.occurred_at,
        )


def merchant_of(request: Request) -> merchant.Caller:
    """The merchant who signed the request (401 otherwise); the body is not read yet."""
    headers: Mapping[str, object] = request.headers or {}
    raw = request.raw_body or b""

    def header(name: str) -> str:
        return str(headers.get(name) or "")

    return merchant.authenticate(
        merchant=header("x-merchant-id"),
        timestamp=header("x-timestamp"),
        nonce=header("x-nonce"),
        signature=header("x-signature"),
        body=raw.encode() if isinstance(raw, str) else raw,
        appid=header("x-appid") or None,
    )


@bp.route("/v1/merchant/order-events", methods=["POST"])
@handled
def order_event() -> dict[str, Any]:
    caller = merchant_of(bp.current_request)
    body = parse_body(bp.current_request, MerchantEventBody)
    return merchant.apply(caller, body.event())
