"""Routes of exports: ask for one, watch it, list them, and (local stack) download the file."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from chalice.app import Blueprint, Response
from pydantic import Field, StringConstraints

from chalicelib.api.http import handled, page_limit, parse_body, principal_of, query
from chalicelib.api.schemas import Body
from chalicelib.services import exports

bp = Blueprint(__name__)

Day = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class ExportBody(Body):
    kind: Literal["ledger", "orders", "withdrawals", "audit", "promoters"]
    format: Literal["csv", "xlsx"]
    from_: Annotated[Day, Field(alias="from")]
    to: Day


@bp.route("/v1/admin/exports", methods=["POST"])
@handled
def request_export() -> Response:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, ExportBody)
    queued = exports.request(principal, body.kind, body.format, body.from_, body.to)
    return Response(body=queued, status_code=202, headers={"Content-Type": "application/json"})


@bp.route("/v1/admin/exports", methods=["GET"])
@handled
def list_exports() -> dict[str, Any]:
    params = query(bp.current_request)
    return exports.listing(principal_of(bp.current_request), params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/exports/{export_id}", methods=["GET"])
@handled
def get_export(export_id: str) -> dict[str, Any]:
    return exports.status(principal_of(bp.current_request), export_id)


@bp.route("/v1/exports/{tenant}/{export_id}/file", methods=["GET"])
@handled
def download_export(tenant: str, export_id: str) -> Response:
    """The local stack's download link (signed, expiring); in AWS files come from S3 links."""
    params = query(bp.current_request)
    found = exports.download(tenant, export_id, params.get("expires"), params.get("signature"))
    headers: dict[str, str | list[str]] = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{found.filename}"',
        "Cache-Control": "no-store",
    }
    return Response(body=found.body, status_code=200, headers=headers)
