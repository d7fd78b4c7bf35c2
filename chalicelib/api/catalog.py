"""Routes of the catalog: products and coupons (the mini-program's and the admin console's)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api import views
from chalicelib.api.http import handled, page_limit, parse_body, principal_of, query
from chalicelib.api.schemas import CouponBody, ProductBody, ProductUpdateBody
from chalicelib.services import catalog

bp = Blueprint(__name__)


@bp.route("/v1/products", methods=["GET"])
@handled
def products() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    params = query(bp.current_request)
    page = catalog.active_products(principal, params.get("cursor"), page_limit(params))
    return {"items": [views.product_view(p) for p in page.items], "next_cursor": page.next_cursor}


@bp.route("/v1/admin/products", methods=["POST"])
@handled
def create_product() -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, ProductBody)
    product = catalog.create_product(
        principal, body.id, body.name, body.price_fen, repurchase_days=body.repurchase_days, active=body.active
    )
    return Response(body=views.admin_product_view(product), status_code=201)


@bp.route("/v1/admin/products/{product_id}", methods=["PUT"])
@handled
def update_product(product_id: str) -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, ProductUpdateBody)
    product = catalog.update_product(
        principal, product_id, body.name, body.price_fen, repurchase_days=body.repurchase_days, active=body.active
    )
    return views.admin_product_view(product)


@bp.route("/v1/admin/products", methods=["GET"])
@handled
def admin_products() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    params = query(bp.current_request)
    page = catalog.admin_products(principal, params.get("cursor"), page_limit(params))
    return {"items": [views.admin_product_view(p) for p in page.items], "next_cursor": page.next_cursor}


@bp.route("/v1/admin/coupons", methods=["POST"])
@handled
def create_coupon() -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, CouponBody)
    template = catalog.create_coupon(
        principal,
        coupon_id=body.id,
        name=body.name,
        threshold_fen=body.threshold_fen,
        amount_fen=body.amount_fen,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        per_user_limit=body.per_user_limit,
        total_limit=body.total_limit,
        product_ids=body.product_ids,
    )
    return Response(body=views.coupon_template_view(template), status_code=201)


@bp.route("/v1/admin/coupons", methods=["GET"])
@handled
def admin_coupons() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    params = query(bp.current_request)
    page = catalog.admin_coupons(principal, params.get("cursor"), page_limit(params))
    return {"items": [views.coupon_template_view(t) for t in page.items], "next_cursor": page.next_cursor}


@bp.route("/v1/coupons/{coupon_id}/claim", methods=["POST"])
@handled
def claim_coupon(coupon_id: str) -> Response:
    claim, template = catalog.claim(principal_of(bp.current_request), coupon_id)
    return Response(body=views.coupon_claim_view(claim, template), status_code=201)


@bp.route("/v1/me/coupons", methods=["GET"])
@handled
def my_coupons() -> dict[str, Any]:
    mine = catalog.my_coupons(principal_of(bp.current_request))
    return {"items": [views.coupon_claim_view(claim, template) for claim, template in mine]}
