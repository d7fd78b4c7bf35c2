"""Routes of the admin console (operators with roles)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api import views
from chalicelib.api.http import handled, int_param, parse_body, principal_of, query, source_ip
from chalicelib.api.schemas import AdminLoginBody, RebindBody
from chalicelib.services import jobs, logins, referrals, team

bp = Blueprint(__name__)


@bp.route("/v1/admin/auth/login", methods=["POST"])
@handled
def admin_login() -> dict[str, Any]:
    body = parse_body(bp.current_request, AdminLoginBody)
    return {"token": logins.admin_login(body.username, body.password, body.appid, source_ip(bp.current_request))}


@bp.route("/v1/admin/users/{uid}/tree", methods=["GET"])
@handled
def user_tree(uid: str) -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    params = query(bp.current_request)
    depth = int_param(params, "depth", 3, 1, 3)
    limit = int_param(params, "limit", 10, 1, 50)
    return team.tree(principal, uid, depth, limit, params.get("cursor"))


@bp.route("/v1/admin/users/{uid}/rebind", methods=["POST"])
@handled
def rebind(uid: str) -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, RebindBody)
    user = referrals.rebind(principal, uid, body.parent_id, body.reason)
    return {**views.user_view(user), "upline": team.upline_refs(user.tenant, user.upline)}


@bp.route("/v1/admin/jobs/{name}/run", methods=["POST"])
@handled
def run_job(name: str) -> dict[str, Any]:
    return {"job": name, "summary": jobs.run_now(principal_of(bp.current_request), name)}
