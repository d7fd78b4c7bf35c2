"""Routes for withdrawals (提现), their review, payouts and the transfer callback."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api import views
from chalicelib.api.http import handled, header, int_param, page_limit, parse_body, parse_object, principal_of, query
from chalicelib.api.schemas import RejectBody, WithdrawalBody
from chalicelib.services import payouts, withdrawals

bp = Blueprint(__name__)


@bp.route("/v1/withdrawals", methods=["POST"])
@handled
def request_withdrawal() -> Response:
    request = bp.current_request
    principal = principal_of(request)
    body = parse_body(request, WithdrawalBody)
    key = header(request, "idempotency-key")
    result, created = withdrawals.request(principal, body.amount_fen, body.real_name, key)
    return Response(body=result, status_code=201 if created else 200)


@bp.route("/v1/withdrawals", methods=["GET"])
@handled
def my_withdrawals() -> dict[str, Any]:
    params = query(bp.current_request)
    return withdrawals.mine(principal_of(bp.current_request), params.get("cursor"), page_limit(params))


@bp.route("/v1/withdrawals/quote", methods=["GET"])
@handled
def withdrawal_quote() -> dict[str, Any]:
    amount = int_param(query(bp.current_request), "amount_fen", 0, 1, 10**10)
    return withdrawals.quote(principal_of(bp.current_request), amount)


@bp.route("/v1/withdrawals/{withdrawal_id}", methods=["GET"])
@handled
def get_withdrawal(withdrawal_id: str) -> dict[str, Any]:
    return views.withdrawal_view(withdrawals.get_own(principal_of(bp.current_request), withdrawal_id))


@bp.route("/v1/withdrawals/{withdrawal_id}/cancel", methods=["POST"])
@handled
def cancel_withdrawal(withdrawal_id: str) -> dict[str, Any]:
    return withdrawals.take_back(principal_of(bp.current_request), withdrawal_id)


@bp.route("/v1/withdrawals/{withdrawal_id}/confirmation", methods=["GET"])
@handled
def withdrawal_confirmation(withdrawal_id: str) -> dict[str, str]:
    return withdrawals.confirmation(principal_of(bp.current_request), withdrawal_id)


@bp.route("/v1/sandbox/withdrawals/{withdrawal_id}/user-confirm", methods=["POST"])
@handled
def sandbox_user_confirm(withdrawal_id: str) -> dict[str, Any]:
    return withdrawals.sandbox_user_confirm(principal_of(bp.current_request), withdrawal_id)


@bp.route("/v1/callbacks/wechatpay/{appid}/transfer", methods=["POST"])
@handled
def transfer_callback(appid: str) -> dict[str, str]:
    """The notify_url handed to WeChat with each transfer bill: the tenant is in the path."""
    request = bp.current_request
    headers = {str(k): str(v) for k, v in (request.headers or {}).items()}
    return payouts.transfer_notification(appid, headers, request.raw_body or b"")


@bp.route("/v1/admin/withdrawals", methods=["GET"])
@handled
def admin_withdrawals() -> dict[str, Any]:
    params = query(bp.current_request)
    principal = principal_of(bp.current_request)
    return withdrawals.admin_list(principal, params.get("state"), params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/withdrawals/{withdrawal_id}", methods=["GET"])
@handled
def admin_withdrawal(withdrawal_id: str) -> dict[str, Any]:
    return views.admin_withdrawal_view(withdrawals.get_any(principal_of(bp.current_request), withdrawal_id))


@bp.route("/v1/admin/withdrawals/{withdrawal_id}/approve", methods=["POST"])
@handled
def approve_withdrawal(withdrawal_id: str) -> dict[str, Any]:
    return withdrawals.approve(principal_of(bp.current_request), withdrawal_id)


@bp.route("/v1/admin/withdrawals/{withdrawal_id}/reject", methods=["POST"])
@handled
def reject_withdrawal(withdrawal_id: str) -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    body = parse_body(bp.current_request, RejectBody)
    return withdrawals.reject(principal, withdrawal_id, body.reason)


@bp.route("/v1/admin/settings/withdrawals", methods=["GET"])
@handled
def withdrawal_rules() -> dict[str, Any]:
    return withdrawals.get_rules(principal_of(bp.current_request))


@bp.route("/v1/admin/settings/withdrawals", methods=["PATCH"])
@handled
def change_withdrawal_rules() -> dict[str, Any]:
    principal = principal_of(bp.current_request)
    return withdrawals.set_rules(principal, parse_object(bp.current_request))


@bp.route("/v1/admin/payout-runs", methods=["GET"])
@handled
def payout_runs() -> dict[str, Any]:
    params = query(bp.current_request)
    return withdrawals.runs(principal_of(bp.current_request), params.get("cursor"), page_limit(params))


@bp.route("/v1/admin/payout-runs/{run_id}", methods=["GET"])
@handled
def payout_run_report(run_id: str) -> dict[str, Any]:
    return withdrawals.run_report(principal_of(bp.current_request), run_id)
