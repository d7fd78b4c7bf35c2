"""Routes of the operators page (owners only) and of an operator's own password."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from chalice.app import Blueprint, Response
from pydantic import StringConstraints, model_validator

from chalicelib.api.http import handled, page_limit, parse_body, principal_of, query, source_ip
from chalicelib.api.schemas import Body
from chalicelib.auth import require_role
from chalicelib.clock import iso
from chalicelib.entities import Role
from chalicelib.operators import MAX_PASSWORD, Operator
from chalicelib.services import operators

bp = Blueprint(__name__)

Username = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD)]
RoleName = Literal["owner", "ops", "finance", "auditor"]


class OperatorBody(Body):
    username: Username
    password: Password
    role: RoleName


class OperatorChangeBody(Body):
    role: RoleName | None = None
    disabled: bool | None = None
    password: Password | None = None

    @model_validator(mode="after")
    def _names_a_change(self) -> OperatorChangeBody:
        if self.role is None and self.disabled is None and self.password is None:
            raise ValueError("name at least one of role, disabled, password")
        return self


class PasswordBody(Body):
    current_password: Password
    new_password: Password


def operator_view(operator: Operator) -> dict[str, Any]:
    return {
        "username": operator.username,
        "role": operator.role.value,
        "disabled": operator.disabled,
        "created_at": iso(operator.created_at) if operator.created_at else None,
    }


@bp.route("/v1/admin/operators", methods=["GET"])
@handled
def list_operators() -> dict[str, Any]:
    principal = require_role(principal_of(bp.current_request), Role.OWNER)
    params = query(bp.current_request)
    page = operators.listing(principal, params.get("cursor"), page_limit(params))
    return {"items": [operator_view(o) for o in page.items], "next_cursor": page.next_cursor}


@bp.route("/v1/admin/operators", methods=["POST"])
@handled
def create_operator() -> Response:
    principal = require_role(principal_of(bp.current_request), Role.OWNER)
    body = parse_body(bp.current_request, OperatorBody)
    operator = operators.create(principal, body.username, body.password, Role(body.role))
    return Response(body=operator_view(operator), status_code=201)


@bp.route("/v1/admin/operators/{username}", methods=["PATCH"])
@handled
def change_operator(username: str) -> dict[str, Any]:
    principal = require_role(principal_of(bp.current_request), Role.OWNER)
    body = parse_body(bp.current_request, OperatorChangeBody)
    role = Role(body.role) if body.role is not None else None
    return operator_view(
        operators.change(principal, username, role=role, disabled=body.disabled, password=body.password)
    )


@bp.route("/v1/admin/me/password", methods=["PUT"])
@handled
def change_own_password() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, PasswordBody)
    source = source_ip(bp.current_request)
    return {"token": operators.change_own_password(principal, body.current_password, body.new_password, source)}
