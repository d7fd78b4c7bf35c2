"""Routes for orders, payments, refunds, commission plans and the promoter's money."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api import views
from chalicelib.api.http import handled, header, int_param, page_limit, parse_body, parse_object, principal_of, query
from chalicelib.api.schemas import OrderBody, RefundBody
from chalicelib.errors import InvalidInput
from chalicelib.services import accounts, orders, plans, refunds

bp = Blueprint(__name__)


@bp.route("/v1/orders", methods=["POST"])
@handled
def place_order() -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, OrderBody)
    order = orders.place(principal, [(x.product_id, x.qty) for x in body.lines], body.share_code, body.coupon_id)
    return Response(body=views.order_view(order), status_code=201)


@bp.route("/v1/orders", methods=["GET"])
@handled
def my_orders() -> dict[str, Any]:
    params = query(bp.current_request)
    return orders.my_orders(principal_of(bp.current_request), params.get("cursor"), page_limit(params))


@bp.route("/v1/orders/{order_id}", methods=["GET"])
@handled
def get_order(order_id: str) -> dict[str, Any]:
    return views.order_view(orders.get(principal_of(bp.current_request), order_id))


@bp.route("/v1/orders/{order_id}/pay", methods=["POST"])
@handled
def pay_order(order_id: str) -> dict[str, Any]:
    return orders.pay(principal_of(bp.current_request), order_id)


@bp.route("/v1/orders/{order_id}/confirm-receipt", methods=["POST"])
@handled
def confirm_receipt(order_id: str) -> dict[str, Any]:
    return views.order_view(orders.confirm_receipt(principal_of(bp.current_request), order_id))


@bp.route("/v1/orders/{order_id}/cancel", methods=["POST"])
@handled
def cancel_order(order_id: str) -> dict[str, Any]:
    return views.order_view(orders.cancel(principal_of(bp.current_request), order_id))


@bp.route("/v1/callbacks/wechatpay/{appid}/payment", methods=["POST"])
@handled
def payment_callback(appid: str) -> dict[str, str]:
    """The notify_url handed to WeChat Pay at prepay and refund: the tenant is in the path."""
    request = bp.current_request
    headers = {str(k): str(v) for k, v in (request.headers or {}).items()}
    return orders.payment_notification(appid, headers, request.raw_body or b"")


@bp.route("/v1/sandbox/orders/{order_id}/pay-success", methods=["POST"])
@handled
def sandbox_pay_success(order_id: str) -> dict[str, Any]:
    return orders.sandbox_pay_success(principal_of(bp.current_request), order_id)


@bp.route("/v1/admin/orders/{order_id}/refunds", methods=["POST"])
@handled
def refund_order(order_id: str) -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, RefundBody)
    key = header(bp.current_request, "idempotency-key")
    if key is not None and not 1 <= len(key) <= 64:
        raise InvalidInput("Idempotency-Key must be 1-64 characters", code="invalid_idempotency_key")
    refund, created = refunds.request(principal, order_id, body.amount_fen, body.reason, key)
    return Response(body=refund, status_code=201 if created else 200)


@bp.route("/v1/me/account", methods=["GET"])
@handled
def my_account() -> dict[str, int]:
    return accounts.account(principal_of(bp.current_request))


@bp.route("/v1/me/commissions", methods=["GET"])
@handled
def my_commissions() -> dict[str, Any]:
    params = query(bp.current_request)
    principal = principal_of(bp.current_request)
    return accounts.my_commissions(principal, params.get("state") or None, params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/plans", methods=["POST"])
@handled
def create_plan() -> Response:
    principal = principal_of(bp.current_request)
    return Response(body=plans.create(principal, parse_object(bp.current_request)), status_code=201)


@bp.route("/v1/admin/plans", methods=["GET"])
@handled
def list_plans() -> dict[str, Any]:
    params = query(bp.current_request)
    return plans.listing(principal_of(bp.current_request), params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/plans/{version}", methods=["GET"])
@handled
def plan_detail(version: str) -> dict[str, Any]:
    number = int_param({"version": version}, "version", 0, 1, 10**9)
    return plans.detail(principal_of(bp.current_request), number)


@bp.route("/v1/admin/plans/{version}/activate", methods=["POST"])
@handled
def activate_plan(version: str) -> dict[str, Any]:
    number = int_param({"version": version}, "version", 0, 1, 10**9)
    return plans.activate(principal_of(bp.current_request), number)
