"""Routes for operators: stream records parked after repeated failures, and their redrive."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import handled, page_limit, parse_object, principal_of, query
from chalicelib.auth import require_role
from chalicelib.entities import Role
from chalicelib.services import parking

bp = Blueprint(__name__)


@bp.route("/v1/admin/parked", methods=["GET"])
@handled
def list_parked() -> dict[str, Any]:
    principal = require_role(principal_of(bp.current_request), Role.OWNER, Role.OPS)
    params = query(bp.current_request)
    return parking.listing(
        principal, params.get("source"), params.get("state"), params.get("cursor"), page_limit(params)
    )


@bp.route("/v1/admin/parked/redrive", methods=["POST"])
@handled
def redrive_parked() -> dict[str, Any]:
    principal = require_role(principal_of(bp.current_request), Role.OWNER)
    source = parse_object(bp.current_request).get("source")
    return parking.redrive_own(principal, source if isinstance(source, str) or source is None else "")
