"""Routes of the audit trail for owners and auditors: read it, and verify nothing was altered."""

from __future__ import annotations

from typing import Annotated, Any

from chalice.app import Blueprint
from pydantic import Field, StringConstraints

from chalicelib.api.http import handled, page_limit, parse_body, principal_of, query
from chalicelib.api.schemas import Body
from chalicelib.services import audit_trail

bp = Blueprint(__name__)

Day = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class AuditVerifyBody(Body):
    from_: Annotated[Day | None, Field(alias="from")] = None
    to: Day | None = None


@bp.route("/v1/admin/audit", methods=["GET"])
@handled
def list_audit() -> dict[str, Any]:
    params = query(bp.current_request)
    return audit_trail.listing(
        principal_of(bp.current_request),
        entity=params.get("entity"),
        action=params.get("action"),
        actor=params.get("actor"),
        first=params.get("from"),
        last=params.get("to"),
        cursor=params.get("cursor"),
        limit=page_limit(params),
    )


@bp.route("/v1/admin/audit/verify", methods=["POST"])
@handled
def verify_audit() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, AuditVerifyBody)
    return audit_trail.verify(principal, body.from_, body.to)
