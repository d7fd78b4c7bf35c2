"""Report routes: a promoter's own month, and the operators' daily, sources and funnel reports."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import handled, int_param, principal_of, query
from chalicelib.services import reports

bp = Blueprint(__name__)


@bp.route("/v1/me/stats", methods=["GET"])
@handled
def my_stats() -> dict[str, Any]:
    return reports.my_stats(principal_of(bp.current_request), query(bp.current_request).get("month"))


@bp.route("/v1/admin/reports/daily", methods=["GET"])
@handled
def daily() -> dict[str, Any]:
    params = query(bp.current_request)
    return reports.daily(principal_of(bp.current_request), params.get("from"), params.get("to"))


@bp.route("/v1/admin/reports/sources", methods=["GET"])
@handled
def sources() -> dict[str, Any]:
    params = query(bp.current_request)
    limit = int_param(params, "limit", 20, 1, reports.MAX_SOURCES)
    return reports.sources(
        principal_of(bp.current_request), params.get("from"), params.get("to"), params.get("by"), limit
    )


@bp.route("/v1/admin/reports/funnel", methods=["GET"])
@handled
def funnel() -> dict[str, Any]:
    params = query(bp.current_request)
    return reports.funnel(principal_of(bp.current_request), params.get("from"), params.get("to"))
