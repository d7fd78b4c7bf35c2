"""Routes the mini-program calls."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api import views
from chalicelib.api.http import handled, page_limit, parse_body, principal_of, query, source_ip
from chalicelib.api.schemas import LoginBody, ScanBody, ShareBody
from chalicelib.errors import InvalidInput
from chalicelib.services import logins, referrals, shares, team, tenants

bp = Blueprint(__name__)


@bp.route("/v1/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"status": "ok"}


@bp.route("/v1/auth/login", methods=["POST"])
@handled
def login() -> dict[str, Any]:
    body = parse_body(bp.current_request, LoginBody)
    result = logins.login(body.code, body.appid, body.name, source_ip(bp.current_request))
    return {"token": result.token, "user": {**views.user_view(result.user), "new": result.created}}


@bp.route("/v1/shares", methods=["POST"])
@handled
def create_share() -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, ShareBody)
    share = shares.create(principal, body.product_id, body.channel, body.coupon_id)
    payload = {
        "code": share.code,
        "scene": share.code,
        "path": shares.page_path(share),
        "qr_url": shares.qr_url(share),
        "product_id": share.product_id,
        "channel": share.channel,
        "coupon_id": share.coupon_id,
    }
    return Response(body=payload, status_code=201)


@bp.route("/v1/shares/{code}/qrcode", methods=["GET"])
@handled
def share_qrcode(code: str) -> Response:
    tenant = tenants.resolve(query(bp.current_request).get("appid"))
    png = shares.qrcode_png(tenant.id, code)
    return Response(body=png, status_code=200, headers={"Content-Type": "image/png", "Cache-Control": "max-age=86400"})


@bp.route("/v1/referrals/scan", methods=["POST"])
@handled
def scan() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, ScanBody)
    result = referrals.scan(principal, body.code)
    payload: dict[str, Any] = {"status": result.status.value}
    if result.reason:
        payload["reason"] = result.reason
    coupon_id = shares.get(principal.tenant, body.code).coupon_id
    if coupon_id:
        payload["coupon_id"] = coupon_id  # the friend may claim it: POST /v1/coupons/{id}/claim
    return payload


@bp.route("/v1/me", methods=["GET"])
@handled
def me() -> dict[str, Any]:
    return team.me(principal_of(bp.current_request))


@bp.route("/v1/me/team", methods=["GET"])
@handled
def my_team() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    params = query(bp.current_request)
    level_raw = params.get("level", "1")
    if level_raw not in {"1", "2", "3"}:
        raise InvalidInput("level must be 1, 2 or 3", code="invalid_level")
    return team.my_team(principal, int(level_raw), params.get("cursor"), page_limit(params))
