"""Routes of the console's promoters page: search and list, and one promoter."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import handled, page_limit, principal_of, query
from chalicelib.services import promoters

bp = Blueprint(__name__)


@bp.route("/v1/admin/promoters", methods=["GET"])
@handled
def list_promoters() -> dict[str, Any]:
    params = query(bp.current_request)
    principal = principal_of(bp.current_request)
    return promoters.listing(principal, params.get("q"), params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/promoters/{uid}", methods=["GET"])
@handled
def promoter(uid: str) -> dict[str, Any]:
    params = query(bp.current_request)
    principal = principal_of(bp.current_request)
    limit = page_limit(params)
    return promoters.detail(principal, uid, params.get("lines_cursor"), params.get("team_cursor"), limit)
