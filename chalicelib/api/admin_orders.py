"""Routes of the console's orders page: a filtered list, and one order with its commission lines
(refunds are `POST /v1/admin/orders/{order_id}/refunds`, in `chalicelib.api.orders`)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import handled, page_limit, principal_of, query
from chalicelib.services import admin_orders

bp = Blueprint(__name__)


@bp.route("/v1/admin/orders", methods=["GET"])
@handled
def list_orders() -> dict[str, Any]:
    params = query(bp.current_request)
    return admin_orders.listing(
        principal_of(bp.current_request),
        state=params.get("state"),
        first=params.get("from"),
        last=params.get("to"),
        promoter=params.get("promoter"),
        cursor=params.get("cursor"),
        limit=page_limit(params),
    )


@bp.route("/v1/admin/orders/{order_id}", methods=["GET"])
@handled
def order(order_id: str) -> dict[str, Any]:
    return admin_orders.detail(principal_of(bp.current_request), order_id)
