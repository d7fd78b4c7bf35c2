"""Response bodies of the HTTP API, as pydantic models: the OpenAPI document's response schemas.

The services build plain dicts (their `*_view` functions); these models describe those dicts, read
from the services and checked against the running API by schemathesis (tests/e2e). Fixed shapes
forbid unknown fields, so a field a service adds without documenting it fails that test. Models are
never used to build responses: the routes stay as they are and cold starts pay nothing for them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}, description="UTC, ISO-8601")]
Fen = Annotated[int, Field(description="money in fen (1/100 yuan)")]
Cursor = Annotated[str | None, Field(description="pass as ?cursor= for the next page; null on the last page")]

OrderStatus = Literal["created", "paid", "received", "cancelled"]
WithdrawalState = Literal[
    "requested", "approved", "sending", "processing", "wait_user_confirm", "paid", "failed", "rejected", "cancelled"
]


class Out(BaseModel):
    """A fixed shape: unknown fields are a contract break."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A shape that may carry more fields than those named (summaries of jobs, stored plan bodies)."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(Out):
    code: str = Field(description="stable, machine-readable; see x-error-codes")
    message: str = Field(description="for developers and logs, in English; not for end users")
    details: Any = None


class ErrorBody(Out):
    error: ErrorDetail


class Health(Out):
    status: Literal["ok"]


class Token(Out):
    token: str = Field(description="JWT: send as `Authorization: Bearer <token>`")


class User(Out):
    id: str
    name: str
    promoter: bool
    created_at: Timestamp
    bound_at: Timestamp | None


class LoginUser(User):
    new: bool = Field(description="created by this login")


class Operator(Out):
    username: str
    role: Literal["owner", "ops", "finance", "auditor"]
    disabled: bool
    created_at: Timestamp | None


class OperatorPage(Out):
    items: list[Operator]
    next_cursor: Cursor


class Login(Out):
    token: str
    user: LoginUser


class UplineRef(Out):
    id: str
    name: str


class Me(User):
    upline: UplineRef | None = Field(description="the level-1 upline only")
    team_counts: dict[str, int] = Field(description='members per level: {"1": n, "2": n, "3": n}')


class Member(Out):
    id: str
    name: str
    bound_at: Timestamp


class TeamPage(Out):
    items: list[Member]
    next_cursor: Cursor


class TreeNode(Out):
    id: str
    name: str
    bound_at: Timestamp | None
    children: list[TreeNode] | None = None
    next_cursor: Cursor = None


class UserTree(User):
    upline: list[UplineRef] = Field(description="level 1 first")
    team_counts: dict[str, int]
    children: list[TreeNode]
    next_cursor: Cursor


class RebindResult(User):
    upline: list[UplineRef] = Field(description="level 1 first")


class Share(Out):
    code: str
    scene: str = Field(description="the wxacode scene (≤ 32 characters)")
    path: str
    qr_url: str
    product_id: str | None
    channel: str | None
    coupon_id: str | None


class ScanResult(Out):
    status: Literal["bound", "already_bound", "rejected"]
    reason: str | None = None
    coupon_id: str | None = Field(default=None, description="a coupon the sharer attached: claim it")


class Product(Out):
    id: str
    name: str
    price_fen: Fen
    repurchase_days: int | None


class AdminProduct(Product):
    active: bool
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ProductPage(Out):
    items: list[Product]
    next_cursor: Cursor


class AdminProductPage(Out):
    items: list[AdminProduct]
    next_cursor: Cursor


class CouponTemplate(Out):
    id: str
    name: str
    threshold_fen: Fen
    amount_fen: Fen
    valid_from: Timestamp
    valid_until: Timestamp
    per_user_limit: int
    total_limit: int | None
    product_ids: list[str]
    issued: int
    created_at: Timestamp | None


class CouponTemplatePage(Out):
    items: list[CouponTemplate]
    next_cursor: Cursor


class CouponClaim(Out):
    coupon_id: str
    claim: int
    state: Literal["claimed", "used"]
    claimed_at: Timestamp
    name: str
    threshold_fen: Fen
    amount_fen: Fen
    valid_from: Timestamp
    valid_until: Timestamp
    product_ids: list[str]


class CouponClaims(Out):
    items: list[CouponClaim]


class OrderLine(Out):
    product_id: str
    name: str
    qty: int
    unit_price_fen: Fen
    paid_fen: Fen


class Order(Out):
    id: str
    status: OrderStatus
    amount_fen: Fen
    list_fen: Fen
    discount_fen: Fen
    refunded_fen: Fen
    coupon_id: str | None
    share_code: str | None
    lines: list[OrderLine]
    placed_at: Timestamp
    paid_at: Timestamp | None
    received_at: Timestamp | None


class OrderSummary(Out):
    id: str
    status: OrderStatus
    amount_fen: Fen
    refunded_fen: Fen
    placed_at: Timestamp


class OrderPage(Out):
    items: list[OrderSummary]
    next_cursor: Cursor


class PayParams(Out):
    """Pass as they are to `wx.requestPayment`."""

    timeStamp: str  # WeChat's name
    nonceStr: str  # WeChat's name
    package: str
    signType: str  # WeChat's name
    paySign: str  # WeChat's name


class Refund(Out):
    refund_id: str
    order_id: str
    amount_fen: Fen
    state: Literal["requested", "succeeded", "failed"]
    reason: str
    requested_at: Timestamp
    late_payment: bool


class Account(Out):
    pending_fen: Fen
    frozen_fen: Fen
    available_fen: Fen
    withdrawing_fen: Fen
    paid_fen: Fen


class CommissionLine(Out):
    order_id: str
    level: int = Field(ge=1, le=3)
    event: str
    amount_fen: Fen = Field(description="negative for reversals and clawbacks")
    state: str
    buyer: str = Field(description="masked: first character, then stars")
    trace: str = Field(description="how the amount was computed, in words")
    created_at: Timestamp
    frozen_until: Timestamp | None


class CommissionPage(Out):
    items: list[CommissionLine]
    next_cursor: Cursor


class Plan(Open):
    """The stored plan body (rates_bps, cap_bps, overrides, ladder, campaigns, ...) and its version."""

    version: int
    active: bool
    created_at: Timestamp
    created_by: str
    activated_at: Timestamp | None


class PlanPage(Out):
    items: list[Plan]
    next_cursor: Cursor


class WithdrawalRules(Out):
    min_fen: Fen
    max_per_day_fen: Fen
    count_per_day: int
    fee_bps: int
    fee_fixed_fen: Fen
    auto_approve_below_fen: Fen
    real_name_from_fen: Fen


class Remaining(Out):
    count: int
    amount_fen: Fen


class WithdrawalQuote(Out):
    amount_fen: Fen
    fee_fen: Fen
    net_fen: Fen
    real_name_required: bool
    available_fen: Fen
    remaining_today: Remaining
    rules: WithdrawalRules


class Withdrawal(Out):
    id: str
    state: WithdrawalState
    amount_fen: Fen
    fee_fen: Fen
    net_fen: Fen
    amount: str = Field(description="amount_fen in yuan, for display")
    created_at: Timestamp
    updated_at: Timestamp
    reason: str | None = None
    fail_reason: str | None = None
    provider_state: str | None = None
    run_id: str | None = None
    confirmation_required: bool | None = Field(default=None, description="true: call wx.requestMerchantTransfer")


class AdminWithdrawal(Withdrawal):
    promoter: str
    attempts: int
    bill_no: str | None
    refusal: str | None = None
    not_found: str | None = None


class AdminWithdrawalRow(AdminWithdrawal):
    promoter_name: str = Field(description="the promoter's display name")


class WithdrawalPage(Out):
    """Each row has the fields of the withdrawal's own page."""

    items: list[Withdrawal]
    next_cursor: Cursor


class AdminWithdrawalPage(Out):
    state: WithdrawalState
    items: list[AdminWithdrawalRow]
    next_cursor: Cursor


class Confirmation(Out):
    """Pass to `wx.requestMerchantTransfer`."""

    package_info: str
    mch_id: str
    appid: str


class PayoutRun(Out):
    id: str
    status: str
    started_at: Timestamp | None
    finished_at: Timestamp | None
    enqueued: int
    enqueued_fen: Fen
    actor: str | None


class PayoutRunPage(Out):
    items: list[PayoutRun]
    next_cursor: Cursor


class StateTotals(Out):
    count: int
    amount_fen: Fen
    net_fen: Fen


class PayoutFailure(Out):
    id: str
    amount_fen: Fen
    reason: str | None


class PayoutRunReport(PayoutRun):
    sent: int
    not_sent_yet: int
    by_state: dict[str, StateTotals]
    failures: list[PayoutFailure]
    failures_total: int


class JobRun(Out):
    job: str
    summary: dict[str, Any] = Field(description="what the job did (counts), per job")


class Parked(Out):
    source: str
    entity: str
    sequence: str
    action: str | None
    reason: Literal["failed", "behind"]
    state: Literal["parked", "replayed"]
    attempts: int
    first_error: str | None
    last_error: str | None
    parked_at: Timestamp
    replayed_at: Timestamp | None


class ParkedPage(Out):
    items: list[Parked]
    next_cursor: Cursor
    waiting: dict[str, int] = Field(description="records waiting per source")


class Redrive(Out):
    replayed: int
    failed_again: int
    waiting: int


class MerchantEventResult(Out):
    status: Literal["applied", "duplicate"]
    order_id: str
    merchant_order_id: str
    order_status: OrderStatus
    amount_fen: Fen
    refunded_fen: Fen


class WeChatAck(Out):
    """The answer WeChat Pay expects from a notify URL."""

    code: Literal["SUCCESS"]
    message: str | None = None


class AuditRecord(Out):
    entity: str
    action: str
    actor: str
    at: Timestamp
    data: Any
    hash: str
    prev_hash: str | None
    id: str


class AuditPage(Out):
    items: list[AuditRecord]
    next_cursor: Cursor


class BadAuditRecord(Out):
    entity: str
    id: str
    at: Timestamp
    action: str
    reason: str


class ExportQueued(Out):
    id: str
    state: Literal["queued"]


class Export(Out):
    id: str
    kind: Literal["ledger", "orders", "withdrawals", "audit", "promoters"]
    format: Literal["csv", "xlsx"]
    from_: str = Field(alias="from", description="first local day")
    to: str = Field(description="last local day")
    state: Literal["queued", "running", "done", "failed"]
    rows: int
    progress_pct: int
    created_at: Timestamp
    finished_at: Timestamp | None
    url: str | None = Field(default=None, description="done: the file (pre-signed S3 link, or this API's signed link)")
    error: str | None = Field(default=None, description="failed: why")


class ExportPage(Out):
    items: list[Export]
    next_cursor: Cursor


class AuditVerification(Out):
    ok: bool
    checked: int
    seals_checked: int
    first_bad: BadAuditRecord | None


# --- reports ------------------------------------------------------------------------------------


class PerLevel(Out):
    """One figure per level of the team: "1", "2", "3"."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    l1: int = Field(alias="1")
    l2: int = Field(alias="2")
    l3: int = Field(alias="3")


class TeamLevel(Out):
    total: int
    new: int


class TeamPerLevel(Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    l1: TeamLevel = Field(alias="1")
    l2: TeamLevel = Field(alias="2")
    l3: TeamLevel = Field(alias="3")


class MyStats(Out):
    month: str
    team: TeamPerLevel
    orders: PerLevel
    sales_fen: PerLevel
    commission_fen: PerLevel


class DayFigures(Out):
    orders: int
    paid_fen: int
    refunds_fen: int
    new_bindings: int
    new_promoters: int
    scans: int
    withdrawals_fen: int
    payouts_fen: int
    commission_fen: PerLevel


class DayRow(DayFigures):
    date: str


class DailyReport(Out):
    days: list[DayRow]
    totals: DayFigures


class SourceRow(Out):
    key: str
    name: str
    orders: int
    paid_fen: int
    commission_fen: int


class SourcesReport(Out):
    items: list[SourceRow]


class Funnel(Out):
    scans: int
    bindings: int
    first_orders: int


class PlanFigures(Out):
    commission_fen: PerLevel
    total_fen: int
    cost_bps: int = Field(description="total commission as basis points of sales_fen")


class PromoterChanges(Out):
    gain: int
    lose: int
    same: int


class PromoterChange(Out):
    promoter: str
    name: str
    active_fen: int
    draft_fen: int


class Simulation(Out):
    """Paid orders of the last `days` local days replayed under the draft and the active plan."""

    days: int
    from_: str = Field(alias="from", description="first local day replayed (YYYY-MM-DD)")
    to: str = Field(description="last local day replayed (today)")
    active_version: int | None = Field(description="the active plan's version; null: no active plan (all zero)")
    orders: int
    sales_fen: int = Field(description="paid less refunded, of the orders replayed")
    draft: PlanFigures
    active: PlanFigures
    promoters: PromoterChanges = Field(description="promoters earning under either plan, draft against active")
    top_changes: list[PromoterChange] = Field(description="largest changes first, at most 10")
    cap_breaches: int = Field(description="orders whose commission the draft's cap trims")


# --- the console's promoters and orders pages ------------------------------------------------------


class AdminPromoter(Out):
    """A promoter as the console lists them: every figure from counters and the account item."""

    id: str
    name: str
    openid: str = Field(description="masked: the first and last four characters")
    promoter: bool
    joined_at: Timestamp
    bound_at: Timestamp | None
    upline: list[UplineRef] = Field(description="level 1 first")
    team_counts: dict[str, int] = Field(description='members per level now: {"1": n, "2": n, "3": n}')
    month: str = Field(description="this month in the tenant's timezone (YYYY-MM)")
    sales_fen: Fen = Field(description="this month's sales of the orders the promoter earns on, all levels")
    commission_fen: Fen = Field(description="this month's commission, all levels")
    account: Account


class AdminPromoterPage(Out):
    items: list[AdminPromoter]
    next_cursor: Cursor = Field(description="null on the last page; a page may be short while it is set")


class AdminCommissionLine(Out):
    promoter: UplineRef
    order_id: str
    level: int = Field(ge=1, le=3)
    event: str = Field(description="paid / received / refund-<id> ...")
    amount_fen: Fen = Field(description="negative for reversals and clawbacks")
    state: str
    buyer: UplineRef
    trace: dict[str, Any] = Field(description="the rule trace: `words`, base_fen, rate_bps, ladder tier, cap ...")
    created_at: Timestamp
    frozen_until: Timestamp | None


class AdminCommissionPage(Out):
    items: list[AdminCommissionLine]
    next_cursor: Cursor


class AdminPromoterDetail(AdminPromoter):
    commissions: AdminCommissionPage = Field(description="by order id, newest orders first; ?lines_cursor=")
    team: TeamPage = Field(description="level 1, newest binding first; ?team_cursor=")


class AdminOrderRow(Out):
    id: str
    buyer: UplineRef
    status: OrderStatus
    amount_fen: Fen
    refunded_fen: Fen
    placed_at: Timestamp
    paid_at: Timestamp | None
    upline: list[UplineRef] = Field(description="the attribution snapshot's upline, level 1 first")


class AdminOrderPage(Out):
    items: list[AdminOrderRow]
    next_cursor: Cursor = Field(description="null on the last page; a page may be short while it is set")


class Attribution(Out):
    upline: list[UplineRef] = Field(description="level 1 first, as taken when the order was placed")
    share_code: str | None
    plan_version: int | None
    buyer_is_promoter: bool


class AdminRefund(Out):
    refund_id: str
    amount_fen: Fen
    state: Literal["requested", "succeeded", "failed"]
    reason: str
    requested_at: Timestamp
    actor: str


class AdminOrder(Order):
    buyer: UplineRef
    source: str = Field(description="miniprogram, or merchant:<id>")
    attribution: Attribution
    refundable_fen: Fen = Field(description="what a refund may still return (0 unless paid or received)")
    refunds: list[AdminRefund]
    commissions: list[AdminCommissionLine] = Field(description="every line of the order, level 1 first")
