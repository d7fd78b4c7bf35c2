"""The API contract: an OpenAPI 3.1 document for every route, served at `/v1/openapi.json`, and
its reference page at `/docs` (Redoc, vendored under `chalicelib/web/`, no CDN).

`ROUTES` is the one route table: per (method, path) who may call it, the pydantic model its body
is parsed with (`chalicelib.api.schemas`, or a documentation model below where the route reads a
free-form object), the model of what it answers (`chalicelib.api.responses`), its query parameters
and the error codes it may answer beyond those its kind implies (`_implied_errors`). A unit test
walks `app.routes` and fails on any route missing here (or listed here but gone), so a new route
cannot go undocumented. The document is built on first request, not at import: cold starts of
functions that never serve it pay nothing.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from chalice.app import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from chalicelib import withdrawal
from chalicelib.api import audit, exports, operators
from chalicelib.api import responses as r
from chalicelib.api import schemas as s
from chalicelib.api.console import csp_hash, script_response
from chalicelib.api.errorcodes import ANY_ROUTE, ERROR_CODES
from chalicelib.api.merchant import MerchantEventBody
from chalicelib.entities import Role
from chalicelib.services.plans import PlanBody

bp = Blueprint(__name__)

WEB = Path(__file__).resolve().parent.parent / "web"
TITLE = "fenxiao: three-level distribution (三级分销) for WeChat mini-programs"
VERSION = "1"


class Auth(Enum):
    NONE = "none"
    USER = "user"  # a mini-program user's JWT
    OPERATOR = "operator"  # an operator's JWT (admin console)
    MERCHANT = "merchant"  # HMAC-signed server-to-server request
    WECHATPAY = "wechatpay"  # a WeChat Pay notification (signed with the platform key)


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


CURSOR = Query("cursor", {"type": "string", "maxLength": 2048}, "the next_cursor of the previous page")
LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size")
PAGED = (CURSOR, LIMIT)


@dataclass(frozen=True, slots=True)
class Route:
    summary: str
    tag: str
    response: type[BaseModel] | None
    auth: Auth = Auth.USER
    roles: tuple[Role, ...] = ()  # operators: who may call it (empty: every operator role)
    body: type[BaseModel] | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # other success statuses with the same body
    media: str = "application/json"
    query: tuple[Query, ...] = ()
    errors: tuple[str, ...] = ()
    headers: tuple[Query, ...] = ()
    description: str = ""
    sandbox: bool = False  # only where WECHAT_MODE=sandbox (404 not_found elsewhere)


# --- documentation bodies for routes that read a free-form object ---------------------------------


class SimulateBody(BaseModel):
    """A draft plan (the body POST /v1/admin/plans takes) and how many local days to replay."""

    plan: PlanBody
    days: int = Field(default=30, ge=1, le=90, description="the last N local days, today included")


# A partial update of the withdrawal rules (name only the rules to change), documented from the
# bounds the rule itself checks (`withdrawal.RULE_BOUNDS`), so the two cannot drift apart.
WithdrawalRulesBody: type[BaseModel] = create_model(
    "WithdrawalRulesBody",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A partial update: name only the rules to change.",
    **{
        name: (int | None, Field(default=None, ge=low, le=high)) for name, (low, high) in withdrawal.RULE_BOUNDS.items()
    },  # type: ignore[call-overload]
)


class RedriveBody(BaseModel):
    source: Literal["orders", "users"] | None = Field(default=None, description="one stream, or all")


class WeChatNotification(BaseModel):
    """WeChat's encrypted notification (verified with the Wechatpay-* headers)."""

    model_config = ConfigDict(extra="allow")

    id: str
    create_time: str
    event_type: str
    resource_type: str
    resource: dict[str, Any]
    summary: str | None = None


# --- the route table -----------------------------------------------------------------------------

OWNER, OPS, FINANCE = Role.OWNER, Role.OPS, Role.FINANCE
READERS = (Role.OWNER, Role.FINANCE, Role.OPS, Role.AUDITOR)
REVIEWERS = (Role.OWNER, Role.FINANCE)
USER_ONLY = ("forbidden",)  # a user route called with an operator's token
ORDER = ("unknown_order",)
WITHDRAWAL = ("unknown_withdrawal",)
PAY = ("wechatpay_unavailable", "wechatpay_error", "wechatpay_not_configured")
APPID = Query("appid", {"type": "string", "maxLength": 64}, "the mini-program (tenant); or send X-Appid")
IDEMPOTENCY = Query("Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 64}, "retry-safe key")
WECHATPAY_HEADERS = tuple(
    Query(name, {"type": "string"})
    for name in ("Wechatpay-Serial", "Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce")
)

ROUTES: dict[tuple[str, str], Route] = {
    # mini-program: login, shares, binding, team
    ("GET", "/v1/health"): Route("Liveness", "system", r.Health, auth=Auth.NONE),
    ("POST", "/v1/auth/login"): Route(
        "Log in with a wx.login code",
        "mini-program",
        r.Login,
        auth=Auth.NONE,
        body=s.LoginBody,
        errors=(
            "invalid_code",
            "risky_user",
            "rate_limited",
            "too_many_attempts",
            "appid_required",
            "unknown_tenant",
            "wechat_error",
            "wechat_unavailable",
            "tenant_not_configured",
        ),
        description="Sandbox stages accept `dev-<name>` as the code.",
    ),
    ("POST", "/v1/shares"): Route(
        "Create a share code (and its page path and QR code URL)",
        "mini-program",
        r.Share,
        body=s.ShareBody,
        status=201,
        errors=("unknown_product", "unknown_coupon", "share_code_busy", "unknown_user"),
    ),
    ("GET", "/v1/shares/{code}/qrcode"): Route(
        "The share's mini-program code (PNG)",
        "mini-program",
        None,
        auth=Auth.NONE,
        media="image/png",
        query=(APPID,),
        errors=(
            "unknown_share",
            "appid_required",
            "unknown_tenant",
            "invalid_scene",
            "invalid_page",
            "wechat_error",
            "wechat_unavailable",
            "tenant_not_configured",
            "rate_limited",
        ),
    ),
    ("POST", "/v1/referrals/scan"): Route(
        "Open a share code: bind to its sharer (first touch wins)",
        "mini-program",
        r.ScanResult,
        body=s.ScanBody,
        errors=("unknown_share", "unknown_sharer", "unknown_user", "busy", *USER_ONLY),
    ),
    ("GET", "/v1/me"): Route("My profile, upline and team counts", "mini-program", r.Me, errors=("unknown_user",)),
    ("GET", "/v1/me/team"): Route(
        "My team at one level",
        "mini-program",
        r.TeamPage,
        query=(Query("level", {"type": "string", "enum": ["1", "2", "3"], "default": "1"}), *PAGED),
        errors=("invalid_level",),
    ),
    # catalog
    ("GET", "/v1/products"): Route("Products on sale", "catalog", r.ProductPage, query=PAGED),
    ("POST", "/v1/coupons/{coupon_id}/claim"): Route(
        "Claim a coupon",
        "catalog",
        r.CouponClaim,
        status=201,
        errors=("unknown_coupon", "expired", "not_started", "sold_out", "limit_reached", "busy", *USER_ONLY),
    ),
    ("GET", "/v1/me/coupons"): Route("My unused coupons", "catalog", r.CouponClaims, errors=USER_ONLY),
    ("POST", "/v1/admin/products"): Route(
        "Create a product",
        "admin: catalog",
        r.AdminProduct,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS),
        body=s.ProductBody,
        status=201,
        errors=("product_exists", "invalid_price", "invalid_product_id"),
    ),
    ("PUT", "/v1/admin/products/{product_id}"): Route(
        "Change a product",
        "admin: catalog",
        r.AdminProduct,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS),
        body=s.ProductUpdateBody,
        errors=("unknown_product", "product_changed", "invalid_price", "busy"),
    ),
    ("GET", "/v1/admin/products"): Route(
        "Every product", "admin: catalog", r.AdminProductPage, auth=Auth.OPERATOR, query=PAGED
    ),
    ("POST", "/v1/admin/coupons"): Route(
        "Create a coupon",
        "admin: catalog",
        r.CouponTemplate,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS),
        body=s.CouponBody,
        status=201,
        errors=("invalid_coupon", "coupon_exists", "unknown_product", "invalid_product_id"),
    ),
    ("GET", "/v1/admin/coupons"): Route(
        "Every coupon", "admin: catalog", r.CouponTemplatePage, auth=Auth.OPERATOR, query=PAGED
    ),
    # orders and payments
    ("POST", "/v1/orders"): Route(
        "Place an order (server-side prices, coupon, attribution snapshot)",
        "orders",
        r.Order,
        body=s.OrderBody,
        status=201,
        errors=(
            "invalid_lines",
            "invalid_qty",
            "unknown_product",
            "coupon_not_held",
            "coupon_not_applicable",
            "unknown_coupon",
            "unknown_user",
            "busy",
            *USER_ONLY,
        ),
    ),
    ("GET", "/v1/orders"): Route("My orders, newest first", "orders", r.OrderPage, query=PAGED),
    ("GET", "/v1/orders/{order_id}"): Route("One of my orders", "orders", r.Order, errors=ORDER),
    ("POST", "/v1/orders/{order_id}/pay"): Route(
        "WeChat Pay parameters for wx.requestPayment",
        "orders",
        r.PayParams,
        errors=(
            *ORDER,
            "not_payable",
            "payment_expired",
            "unknown_user",
            "order_paid",
            "order_closed",
            "order_expired",
            "invalid_payment",
            "invalid_notify_url",
            "busy",
            *PAY,
        ),
    ),
    ("POST", "/v1/orders/{order_id}/confirm-receipt"): Route(
        "Confirm receipt (starts the commission freeze window)",
        "orders",
        r.Order,
        errors=(*ORDER, "cannot_receive", "busy"),
    ),
    ("POST", "/v1/orders/{order_id}/cancel"): Route(
        "Cancel an unpaid order (closed at WeChat Pay first)",
        "orders",
        r.Order,
        errors=(*ORDER, "cannot_cancel", "order_paid", "busy", *PAY),
    ),
    ("POST", "/v1/callbacks/wechatpay/{appid}/payment"): Route(
        "WeChat Pay's payment and refund notifications (notify_url)",
        "callbacks",
        r.WeChatAck,
        auth=Auth.WECHATPAY,
        body=WeChatNotification,
        headers=WECHATPAY_HEADERS,
        errors=(
            "unknown_tenant",
            "bad_signature",
            "stale_notification",
            "bad_notification",
            "unknown_order",
            "payment_mismatch",
            "wechatpay_not_configured",
            "busy",
        ),
    ),
    ("POST", "/v1/sandbox/orders/{order_id}/pay-success"): Route(
        "Sandbox: the buyer pays (the WeChat Pay twin sends its notification)",
        "sandbox",
        r.Order,
        sandbox=True,
        errors=(
            *ORDER,
            "not_found",
            "not_payable",
            "payment_expired",
            "unknown_user",
            "order_paid",
            "unknown_payment",
            "order_closed",
            "order_expired",
            "invalid_payment",
            "invalid_notify_url",
            "busy",
            *PAY,
        ),
    ),
    ("GET", "/v1/admin/orders"): Route(
        "Orders, newest first: by state, local dates and a level-1..3 promoter",
        "admin: orders",
        r.AdminOrderPage,
        auth=Auth.OPERATOR,
        roles=READERS,
        query=(
            Query("state", {"type": "string", "enum": ["created", "paid", "received", "cancelled"]}),
            Query("from", {"type": "string", "format": "date"}, "first local day (YYYY-MM-DD)"),
            Query("to", {"type": "string", "format": "date"}, "last local day (YYYY-MM-DD)"),
            Query("promoter", {"type": "string", "maxLength": 64}, "a user id at level 1, 2 or 3"),
            *PAGED,
        ),
        errors=("invalid_state", "invalid_date", "invalid_range", "invalid_promoter"),
    ),
    ("GET", "/v1/admin/orders/{order_id}"): Route(
        "One order with its attribution, refunds and commission lines (rule traces)",
        "admin: orders",
        r.AdminOrder,
        auth=Auth.OPERATOR,
        roles=READERS,
        errors=ORDER,
    ),
    ("POST", "/v1/admin/orders/{order_id}/refunds"): Route(
        "Refund part or all of a paid order (201 new, 200 the same request again)",
        "admin: orders",
        r.Refund,
        auth=Auth.OPERATOR,
        roles=REVIEWERS,
        body=s.RefundBody,
        status=201,
        also=(200,),
        headers=(IDEMPOTENCY,),
        errors=(
            *ORDER,
            "not_refundable",
            "invalid_amount",
            "too_many_refunds",
            "invalid_refund",
            "busy",
            "invalid_idempotency_key",
            "idempotency_key_reused",
            *PAY,
        ),
    ),
    # commission
    ("GET", "/v1/me/account"): Route("My money: pending, frozen, available, withdrawing, paid", "money", r.Account),
    ("GET", "/v1/me/commissions"): Route(
        "My commission lines, newest first",
        "money",
        r.CommissionPage,
        query=(Query("state", {"type": "string", "enum": ["pending", "frozen", "available"]}), *PAGED),
        errors=("invalid_state",),
    ),
    ("POST", "/v1/admin/plans"): Route(
        "Save a new commission plan version",
        "admin: plans",
        r.Plan,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        body=PlanBody,
        status=201,
        errors=("invalid_plan", "forbidden_fee", "busy"),
    ),
    ("POST", "/v1/admin/plans/simulate"): Route(
        "Replay the last days of paid orders under a draft plan and the active one",
        "admin: plans",
        r.Simulation,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS, FINANCE),
        body=SimulateBody,
        errors=("invalid_plan", "forbidden_fee", "invalid_days", "too_many_orders"),
        description="Uses the commission rules the engine runs, each order's attribution snapshot and the "
        "ladder's month-to-date sales as the replay accumulates them; writes nothing.",
    ),
    ("GET", "/v1/admin/plans"): Route("Plan versions", "admin: plans", r.PlanPage, auth=Auth.OPERATOR, query=PAGED),
    ("GET", "/v1/admin/plans/{version}"): Route(
        "One plan version", "admin: plans", r.Plan, auth=Auth.OPERATOR, errors=("invalid_version", "unknown_plan")
    ),
    ("POST", "/v1/admin/plans/{version}/activate"): Route(
        "Make a plan version the active one (orders placed from now on use it)",
        "admin: plans",
        r.Plan,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        errors=("invalid_version", "unknown_plan"),
    ),
    # withdrawals
    ("POST", "/v1/withdrawals"): Route(
        "Withdraw available money (201 new, 200 the same Idempotency-Key again)",
        "withdrawals",
        r.Withdrawal,
        body=s.WithdrawalBody,
        status=201,
        also=(200,),
        headers=(IDEMPOTENCY,),
        errors=(
            "below_minimum",
            "daily_amount_exceeded",
            "daily_count_exceeded",
            "insufficient_balance",
            "negative_balance",
            "real_name_required",
            "idempotency_key_reused",
            "invalid_idempotency_key",
            "unknown_tenant",
            "busy",
            *USER_ONLY,
        ),
    ),
    ("GET", "/v1/withdrawals"): Route("My withdrawals, newest first", "withdrawals", r.WithdrawalPage, query=PAGED),
    ("GET", "/v1/withdrawals/quote"): Route(
        "What a withdrawal would cost, before confirming it",
        "withdrawals",
        r.WithdrawalQuote,
        query=(Query("amount_fen", {"type": "integer", "minimum": 1, "maximum": 10**10}),),
        errors=("invalid_amount_fen", "below_minimum", "daily_amount_exceeded", "real_name_required", "unknown_tenant"),
    ),
    ("GET", "/v1/withdrawals/{withdrawal_id}"): Route(
        "One of my withdrawals", "withdrawals", r.Withdrawal, errors=WITHDRAWAL
    ),
    ("POST", "/v1/withdrawals/{withdrawal_id}/cancel"): Route(
        "Take a withdrawal back (before it is sent, or while it waits for my confirmation)",
        "withdrawals",
        r.Withdrawal,
        errors=(*WITHDRAWAL, "invalid_state", "not_cancellable", "busy", "wechatpay_unavailable"),
    ),
    ("GET", "/v1/withdrawals/{withdrawal_id}/confirmation"): Route(
        "What wx.requestMerchantTransfer needs",
        "withdrawals",
        r.Confirmation,
        errors=(*WITHDRAWAL, "not_waiting_for_confirmation", "wechatpay_not_configured"),
    ),
    ("POST", "/v1/sandbox/withdrawals/{withdrawal_id}/user-confirm"): Route(
        "Sandbox: the user confirms the transfer in WeChat",
        "sandbox",
        r.Withdrawal,
        sandbox=True,
        errors=(*WITHDRAWAL, "not_found", "not_waiting", "unknown_transfer"),
    ),
    ("POST", "/v1/callbacks/wechatpay/{appid}/transfer"): Route(
        "WeChat's transfer bill notifications (MCHTRANSFER.BILL.FINISHED)",
        "callbacks",
        r.WeChatAck,
        auth=Auth.WECHATPAY,
        body=WeChatNotification,
        headers=WECHATPAY_HEADERS,
        errors=(
            "unknown_tenant",
            "bad_signature",
            "stale_notification",
            "bad_notification",
            "unknown_withdrawal",
            "transfer_mismatch",
            "wechatpay_not_configured",
            "busy",
        ),
    ),
    ("GET", "/v1/admin/withdrawals"): Route(
        "Withdrawals in one state, oldest first",
        "admin: withdrawals",
        r.AdminWithdrawalPage,
        auth=Auth.OPERATOR,
        roles=READERS,
        query=(Query("state", {"type": "string", "default": "requested"}), *PAGED),
        errors=("invalid_state",),
    ),
    ("GET", "/v1/admin/withdrawals/{withdrawal_id}"): Route(
        "One withdrawal", "admin: withdrawals", r.AdminWithdrawal, auth=Auth.OPERATOR, roles=READERS, errors=WITHDRAWAL
    ),
    ("POST", "/v1/admin/withdrawals/{withdrawal_id}/approve"): Route(
        "Approve a requested withdrawal (the payout run sends it)",
        "admin: withdrawals",
        r.AdminWithdrawal,
        auth=Auth.OPERATOR,
        roles=REVIEWERS,
        errors=(*WITHDRAWAL, "invalid_state", "busy"),
    ),
    ("POST", "/v1/admin/withdrawals/{withdrawal_id}/reject"): Route(
        "Reject a requested withdrawal (the money returns to available)",
        "admin: withdrawals",
        r.AdminWithdrawal,
        auth=Auth.OPERATOR,
        roles=REVIEWERS,
        body=s.RejectBody,
        errors=(*WITHDRAWAL, "invalid_state", "busy"),
    ),
    ("GET", "/v1/admin/settings/withdrawals"): Route(
        "The tenant's withdrawal rules", "admin: withdrawals", r.WithdrawalRules, auth=Auth.OPERATOR, roles=READERS
    ),
    ("PATCH", "/v1/admin/settings/withdrawals"): Route(
        "Change some withdrawal rules",
        "admin: withdrawals",
        r.WithdrawalRules,
        auth=Auth.OPERATOR,
        roles=REVIEWERS,
        body=WithdrawalRulesBody,
        errors=("invalid_rules", "busy"),
    ),
    ("GET", "/v1/admin/payout-runs"): Route(
        "Payout runs, newest first",
        "admin: withdrawals",
        r.PayoutRunPage,
        auth=Auth.OPERATOR,
        roles=READERS,
        query=PAGED,
    ),
    ("GET", "/v1/admin/payout-runs/{run_id}"): Route(
        "A payout run: counts and sums by state, failures",
        "admin: withdrawals",
        r.PayoutRunReport,
        auth=Auth.OPERATOR,
        roles=READERS,
        errors=("unknown_run",),
    ),
    # operators: team, jobs, parked records
    ("POST", "/v1/admin/auth/login"): Route(
        "Operator login",
        "admin: operators",
        r.Token,
        auth=Auth.NONE,
        body=s.AdminLoginBody,
        errors=("invalid_credentials", "too_many_attempts", "appid_required", "unknown_tenant"),
    ),
    ("GET", "/v1/admin/promoters"): Route(
        "Promoters: one by exact id or openid, by name prefix, or all newest first",
        "admin: team",
        r.AdminPromoterPage,
        auth=Auth.OPERATOR,
        roles=READERS,
        query=(Query("q", {"type": "string", "maxLength": 64}, "user id, openid or name prefix"), *PAGED),
        errors=("invalid_query",),
    ),
    ("GET", "/v1/admin/promoters/{uid}"): Route(
        "One promoter: account, commission lines and level-1 team (each paged)",
        "admin: team",
        r.AdminPromoterDetail,
        auth=Auth.OPERATOR,
        roles=READERS,
        query=(
            Query("lines_cursor", CURSOR.schema, "the commissions' next_cursor"),
            Query("team_cursor", CURSOR.schema, "the team's next_cursor"),
            LIMIT,
        ),
        errors=("unknown_user", "invalid_cursor"),
    ),
    ("GET", "/v1/admin/users/{uid}/tree"): Route(
        "A user and their downline, up to three levels",
        "admin: team",
        r.UserTree,
        auth=Auth.OPERATOR,
        query=(
            Query("depth", {"type": "integer", "minimum": 1, "maximum": 3, "default": 3}),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}, "children per node"),
            CURSOR,
        ),
        errors=("unknown_user", "invalid_depth"),
    ),
    ("POST", "/v1/admin/users/{uid}/rebind"): Route(
        "Move a user (and their team) under another upline",
        "admin: team",
        r.RebindResult,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS),
        body=s.RebindBody,
        errors=("unknown_user", "cycle", "self_binding", "same_parent", "tree_too_deep", "reason_required", "busy"),
    ),
    ("POST", "/v1/admin/jobs/{name}/run"): Route(
        "Run a scheduled job now, for the caller's tenant only (audited)",
        "admin: operations",
        r.JobRun,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        errors=("unknown_job",),
    ),
    ("GET", "/v1/admin/parked"): Route(
        "Stream records parked after repeated failures",
        "admin: operations",
        r.ParkedPage,
        auth=Auth.OPERATOR,
        roles=(OWNER, OPS),
        query=(
            Query("source", {"type": "string", "enum": ["orders", "users"]}),
            Query("state", {"type": "string", "enum": ["parked", "replayed"], "default": "parked"}),
            *PAGED,
        ),
        errors=("invalid_source", "invalid_state"),
    ),
    ("POST", "/v1/admin/parked/redrive"): Route(
        "Replay the tenant's parked records",
        "admin: operations",
        r.Redrive,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        body=RedriveBody,
        errors=("invalid_source",),
    ),
    ("GET", "/v1/admin/operators"): Route(
        "The tenant's operators, by username",
        "admin: operators",
        r.OperatorPage,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        query=PAGED,
    ),
    ("POST", "/v1/admin/operators"): Route(
        "Create an operator",
        "admin: operators",
        r.Operator,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        body=operators.OperatorBody,
        status=201,
        errors=("operator_exists", "invalid_username", "invalid_password", "invalid_role"),
    ),
    ("PATCH", "/v1/admin/operators/{username}"): Route(
        "Change an operator's role, password or disabled flag (their tokens end at once)",
        "admin: operators",
        r.Operator,
        auth=Auth.OPERATOR,
        roles=(OWNER,),
        body=operators.OperatorChangeBody,
        errors=("unknown_operator", "empty_change", "concurrent_change", "last_owner", "invalid_password"),
    ),
    ("PUT", "/v1/admin/me/password"): Route(
        "Change my own password (answers a fresh token; my other sessions end)",
        "admin: operators",
        r.Token,
        auth=Auth.OPERATOR,
        body=operators.PasswordBody,
        errors=("wrong_password", "invalid_password", "too_many_attempts", "concurrent_change", "unknown_operator"),
    ),
    ("GET", "/v1/admin/audit"): Route(
        "The audit trail, newest first (one entity's, or every entity's by day)",
        "admin: audit",
        r.AuditPage,
        auth=Auth.OPERATOR,
        roles=(OWNER, Role.AUDITOR),
        query=(
            Query("entity", {"type": "string"}, "e.g. order:o2026..., withdrawal:W..."),
            Query("action", {"type": "string"}),
            Query("actor", {"type": "string"}),
            Query("from", {"type": "string", "format": "date"}, "first local day"),
            Query("to", {"type": "string", "format": "date"}, "last local day"),
            *PAGED,
        ),
        errors=("invalid_date", "invalid_range", "range_too_long", "invalid_filter", "unknown_tenant"),
    ),
    ("POST", "/v1/admin/audit/verify"): Route(
        "Recompute the hashes, chains and daily seals of a date range",
        "admin: audit",
        r.AuditVerification,
        auth=Auth.OPERATOR,
        roles=(OWNER, Role.AUDITOR),
        body=audit.AuditVerifyBody,
        errors=("invalid_date", "invalid_range", "range_too_long", "unknown_tenant"),
    ),
    ("GET", "/v1/me/stats"): Route(
        "My team and performance per level in a month (team now and who joined in the month)",
        "reports",
        r.MyStats,
        query=(Query("month", {"type": "string", "pattern": r"^\d{4}-\d{2}$"}, "default: this month, tenant's time"),),
        errors=("invalid_month", "unknown_tenant"),
    ),
    ("GET", "/v1/admin/reports/daily"): Route(
        "Each local day of a range: orders, paid, refunds, commission per level, bindings, payouts",
        "admin: reports",
        r.DailyReport,
        auth=Auth.OPERATOR,
        query=(
            Query("from", {"type": "string", "format": "date"}, "first local day (default: 6 days before to)"),
            Query("to", {"type": "string", "format": "date"}, "last local day (default: today)"),
        ),
        errors=("invalid_date", "invalid_range", "range_too_long", "unknown_tenant"),
    ),
    ("GET", "/v1/admin/reports/sources"): Route(
        "Order sources over a range by share channel, product or level-1 promoter, largest first",
        "admin: reports",
        r.SourcesReport,
        auth=Auth.OPERATOR,
        query=(
            Query("from", {"type": "string", "format": "date"}),
            Query("to", {"type": "string", "format": "date"}),
            Query("by", {"type": "string", "enum": ["channel", "product", "promoter"]}, "default: channel"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
        ),
        errors=("invalid_date", "invalid_range", "range_too_long", "invalid_by", "unknown_tenant"),
    ),
    ("GET", "/v1/admin/reports/funnel"): Route(
        "Conversion over a range: scans, bindings, buyers' first paid orders",
        "admin: reports",
        r.Funnel,
        auth=Auth.OPERATOR,
        query=(Query("from", {"type": "string", "format": "date"}), Query("to", {"type": "string", "format": "date"})),
        errors=("invalid_date", "invalid_range", "range_too_long", "unknown_tenant"),
    ),
    ("POST", "/v1/admin/exports"): Route(
        "Ask for an export (CSV or XLSX) of local days; a job writes it",
        "admin: exports",
        r.ExportQueued,
        auth=Auth.OPERATOR,
        roles=(OWNER, Role.FINANCE, Role.AUDITOR),
        body=exports.ExportBody,
        status=202,
        errors=("invalid_kind", "invalid_format", "invalid_date", "invalid_range", "range_too_long"),
    ),
    ("GET", "/v1/admin/exports"): Route(
        "The tenant's exports, newest first",
        "admin: exports",
        r.ExportPage,
        auth=Auth.OPERATOR,
        roles=(OWNER, Role.FINANCE, Role.AUDITOR),
        query=PAGED,
    ),
    ("GET", "/v1/admin/exports/{export_id}"): Route(
        "An export's state, rows and progress; when done, its download link (valid one hour)",
        "admin: exports",
        r.Export,
        auth=Auth.OPERATOR,
        roles=(OWNER, Role.FINANCE, Role.AUDITOR),
        errors=("export_not_found",),
    ),
    ("GET", "/v1/exports/{tenant}/{export_id}/file"): Route(
        "The local stack's download link of a finished export (signed, expiring; in AWS: S3 links)",
        "admin: exports",
        None,
        auth=Auth.NONE,
        media="application/octet-stream",
        query=(
            Query("expires", {"type": "integer"}, "unix seconds"),
            Query("signature", {"type": "string"}, "HMAC of tenant, export and expires"),
        ),
        errors=("invalid_link", "link_expired", "export_not_found"),
    ),
    # merchants
    ("POST", "/v1/merchant/order-events"): Route(
        "A shop's order event: paid, received or refunded (applied once per event_id)",
        "merchant",
        r.MerchantEventResult,
        auth=Auth.MERCHANT,
        body=MerchantEventBody,
        errors=(
            "bad_signature",
            "stale_request",
            "replayed_nonce",
            "merchant_tenant_mismatch",
            "merchant_api_unconfigured",
            "appid_required",
            "unknown_tenant",
            "event_id_reused",
            "order_mismatch",
            "invalid_occurred_at",
            "invalid_amount",
            "not_payable",
            "cannot_receive",
            "not_refundable",
            "unknown_order",
            "unknown_product",
            "busy",
        ),
    ),
    # pages
    ("GET", "/admin"): Route("The admin console (HTML)", "pages", None, auth=Auth.NONE, media="text/html"),
    ("GET", "/admin/echarts.min.js"): Route(
        "The vendored ECharts bundle the console's dashboard draws with",
        "pages",
        None,
        auth=Auth.NONE,
        media="application/javascript",
    ),
    ("GET", "/docs"): Route("This reference (HTML)", "pages", None, auth=Auth.NONE, media="text/html"),
    ("GET", "/docs/redoc.standalone.js"): Route(
        "The vendored Redoc bundle /docs uses", "pages", None, auth=Auth.NONE, media="application/javascript"
    ),
    ("GET", "/v1/openapi.json"): Route("This document", "system", None, auth=Auth.NONE),
}


def routes() -> dict[tuple[str, str], Route]:
    """Every documented route."""
    return ROUTES


# --- building the document -------------------------------------------------------------------------

_USER_AUTH = ("missing_token", "invalid_token", "token_expired", "tenant_mismatch")
_BODY = ("invalid_json", "invalid_body", "body_too_deep", "body_too_large")


def _implied_errors(route: Route) -> tuple[str, ...]:
    """The codes a route answers by its kind: authentication, body parsing, paging."""
    implied: list[str] = []
    if route.auth is Auth.USER:
        implied += _USER_AUTH
    if route.auth is Auth.OPERATOR:
        implied += (*_USER_AUTH, "token_revoked", "forbidden")
    if route.body is not None and route.auth is not Auth.WECHATPAY:
        implied += _BODY
    names = {q.name for q in route.query}
    if "cursor" in names:
        implied.append("invalid_cursor")
    if "limit" in names:
        implied.append("invalid_limit")
    return tuple(implied)


def route_errors(route: Route) -> list[str]:
    """Every code the route may answer: its own, its kind's and any route's (framework, gateway)."""
    return sorted({*route.errors, *_implied_errors(route), *ANY_ROUTE})


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.auth is Auth.USER:
        return [{"user": []}]
    if route.auth is Auth.OPERATOR:
        return [{"operator": [role.value for role in route.roles]}]
    if route.auth is Auth.MERCHANT:
        return [{"merchantId": [], "merchantTimestamp": [], "merchantNonce": [], "merchantSignature": []}]
    if route.auth is Auth.WECHATPAY:
        return [{"wechatpaySignature": []}]
    return []


def _parameters(path: str, route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
        for q in route.query
    ]
    params += [
        {"name": h.name, "in": "header", "required": False, "schema": h.schema, "description": h.description}
        for h in route.headers
    ]
    if route.auth in (Auth.USER, Auth.OPERATOR, Auth.MERCHANT):
        params.append(
            {
                "name": "X-Appid",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 64},
                "description": "the calling mini-program; must match the token's (merchants: signed)",
            }
        )
    return params


def _success(route: Route) -> dict[str, Any]:
    if route.response is not None:
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.response.__name__}"}}}
    elif route.media == "application/json":
        content = {"application/json": {"schema": {"type": "object"}}}
    elif route.media == "image/png":
        content = {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}
    else:
        content = {route.media: {"schema": {"type": "string"}}}
    return {"description": "OK", "content": content}


def _error_responses(codes: list[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        for status in ERROR_CODES[code].statuses:
            by_status.setdefault(status, []).append(code)
    return {
        str(status): {
            "description": ", ".join(f"`{c}`" for c in sorted(names)),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status, names in sorted(by_status.items())
    }


def _operation(method: str, path: str, route: Route) -> dict[str, Any]:
    codes = route_errors(route)
    responses = {str(route.status): _success(route)}
    for status in route.also:
        responses[str(status)] = _success(route)
    responses.update(_error_responses(codes))
    description = route.description
    if route.auth is Auth.OPERATOR:
        roles = ", ".join(role.value for role in route.roles) or "any operator"
        description = f"Roles: {roles}. {description}".strip()
    if route.sandbox:
        description = f"Sandbox stages only (WECHAT_MODE=sandbox); elsewhere 404. {description}".strip()
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(path, route),
        "responses": responses,
        "security": _security(route),
        "x-error-codes": codes,
    }
    if description:
        op["description"] = description
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body not in (RedriveBody, WithdrawalRulesBody, audit.AuditVerifyBody),  # all optional
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
        }
    return op


SECURITY_SCHEMES: dict[str, Any] = {
    "user": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A mini-program user's token from POST /v1/auth/login (role `user`).",
    },
    "operator": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An operator's token from POST /v1/admin/auth/login. Roles: owner (everything), ops "
        "(catalog, team, parked records), finance (refunds, withdrawals), auditor (read only). Each "
        "operation lists the roles it needs; a token stops working at once when its operator is "
        "disabled, demoted or reset (401 token_revoked).",
    },
    "merchantId": {"type": "apiKey", "in": "header", "name": "X-Merchant-Id", "description": "the merchant's id"},
    "merchantTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Timestamp",
        "description": "Unix seconds, within 5 minutes of the server's clock",
    },
    "merchantNonce": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Nonce",
        "description": "8-64 of [A-Za-z0-9_-], never reused",
    },
    "merchantSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "lowercase hex HMAC-SHA256 with the merchant secret over "
        "`timestamp + \\n + nonce + \\n + raw body`; X-Appid names the merchant's mini-program",
    },
    "wechatpaySignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Wechatpay-Signature",
        "description": "WeChat Pay's RSA signature over Wechatpay-Timestamp, Wechatpay-Nonce and the body, "
        "verified with the tenant's WeChat Pay public key (Wechatpay-Serial names it)",
    },
}

DESCRIPTION = """\
The HTTP API of a three-level distribution (三级分销) backend for WeChat mini-programs.

* Money is integer **fen** (1/100 yuan); rates are integer basis points.
* Every error answers `{"error": {"code": "...", "message": "..."}}` with a 4xx (or 502/503 for
  WeChat outages). Branch on `code`; each operation lists its codes in `x-error-codes`, and the
  document's `x-error-codes` says for each its status and what a mini-program should show
  (also in docs/error-codes.md).
* Lists are pages: pass `next_cursor` back as `?cursor=` (cursors are signed and opaque).
* Every request of a mini-program sends `X-Appid` (or WeChat's referer); tokens are per mini-program.
"""


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "serialization" if m.__module__ == r.__name__ else "validation") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict; `document()` caches the served copy)."""
    table = routes()
    paths: dict[str, dict[str, Any]] = {}
    models: list[type[BaseModel]] = [r.ErrorBody]
    for (method, path), route in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route)
        models += [m for m in (route.body, route.response) if m is not None and m not in models]
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in sorted({route.tag for route in table.values()})],
        "paths": paths,
        "components": {"schemas": _schemas(models), "securitySchemes": SECURITY_SCHEMES},
        "x-error-codes": {
            code: {"status": list(e.statuses), "show": e.show, "meaning": e.meaning, "source": e.source}
            for code, e in sorted(ERROR_CODES.items())
        },
    }


@functools.cache
def document_json() -> str:
    """The served document, built on the first request of a process."""
    return json.dumps(build_document(), ensure_ascii=False, sort_keys=True)


# --- serving it ------------------------------------------------------------------------------------

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fenxiao API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{margin:0}</style></head>
<body><div id="redoc"></div>
<script src="/docs/redoc.standalone.js"></script>
<script>Redoc.init("/v1/openapi.json", {expandResponses: "200,201"}, document.getElementById("redoc"));</script>
</body></html>
"""


@functools.cache
def _docs_headers() -> dict[str, str | list[str]]:
    inline = re.findall(r"<script>(.*?)</script>", DOCS_PAGE, re.DOTALL)
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self' " + " ".join(csp_hash(x) for x in inline),
            # Redoc injects its styles at run time (styled-components): inline styles are allowed here
            # (a hash beside 'unsafe-inline' would make browsers ignore it).
            "style-src 'self' 'unsafe-inline'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "worker-src 'self' blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


@functools.cache
def _redoc_bundle() -> str:
    return (WEB / "redoc.standalone.js").read_text(encoding="utf-8")


@bp.route("/v1/openapi.json", methods=["GET"])
def openapi_json() -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", "Cache-Control": "max-age=300"}
    return Response(body=document_json(), status_code=200, headers=headers)


@bp.route("/docs", methods=["GET"])
def docs_page() -> Response:
    return Response(body=DOCS_PAGE, status_code=200, headers=_docs_headers())


@bp.route("/docs/redoc.standalone.js", methods=["GET"])
def redoc_bundle() -> Response:
    return script_response(_redoc_bundle())
