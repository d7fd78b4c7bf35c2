"""PynamoDB models: one per table, every hash key starting with the tenant id.

Table names and the endpoint come from settings through `configure()`, called by the store
factory on first use; nothing here touches AWS at import time.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.settings import Settings


class _Unconfigured:
    """Stands for a table name until `configure()` runs, and says so loudly if used."""

    def __init__(self, logical: str) -> None:
        self.logical = logical

    def __get__(self, obj: object, owner: type | None = None) -> str:
        raise RuntimeError(f"table '{self.logical}' used before chalicelib.store.models.configure()")


class TeamL1Index(GlobalSecondaryIndex["UserModel"]):
    class Meta:
        index_name = "team_l1"
        projection = IncludeProjection(["uid", "name", "upline"])

    l1k = UnicodeAttribute(hash_key=True)
    bound_at = UnicodeAttribute(range_key=True)


class TeamL2Index(GlobalSecondaryIndex["UserModel"]):
    class Meta:
        index_name = "team_l2"
        projection = IncludeProjection(["uid", "name", "upline"])

    l2k = UnicodeAttribute(hash_key=True)
    bound_at = UnicodeAttribute(range_key=True)


class TeamL3Index(GlobalSecondaryIndex["UserModel"]):
    class Meta:
        index_name = "team_l3"
        projection = IncludeProjection(["uid", "name", "upline"])

    l3k = UnicodeAttribute(hash_key=True)
    bound_at = UnicodeAttribute(range_key=True)


class UsersJoinedIndex(GlobalSecondaryIndex["UserModel"]):
    """A tenant's users by when they joined, newest first (the console's promoters list). Keys are
    attributes every user has from creation and never change, and only `promoter` is projected:
    the index is written when a user is created (and if the promoter flag changes), not on every
    bind or version; the list reads the page's users whole afterwards (one batch get)."""

    class Meta:
        index_name = "joined"
        projection = IncludeProjection(["promoter"])

    tenant = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class UsersNamedIndex(GlobalSecondaryIndex["UserModel"]):
    """A tenant's users by display name (the console's search by name prefix); written like
    `joined`: on creation only."""

    class Meta:
        index_name = "named"
        projection = IncludeProjection(["promoter"])

    tenant = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)


class UserModel(Model):
    """A shopper (every shopper may promote) with the upline copied at bind time."""

    class Meta:
        table_name = _Unconfigured("users")
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"

    pk = UnicodeAttribute(hash_key=True)  # tenant#uid
    tenant = UnicodeAttribute()
    uid = UnicodeAttribute()
    openid = UnicodeAttribute()
    name = UnicodeAttribute()
    created_at = UnicodeAttribute()
    promoter = BooleanAttribute(default=True)
    upline = ListAttribute(of=UnicodeAttribute, null=True)
    l1k = UnicodeAttribute(null=True)
    l2k = UnicodeAttribute(null=True)
    l3k = UnicodeAttribute(null=True)
    bound_at = UnicodeAttribute(null=True)
    bound_via = UnicodeAttribute(null=True)  # share code, or "admin:<name>"
    rebinds = NumberAttribute(default=0)
    # The change that produced this version of the item; the users stream turns each version
    # into one audit record chained to the previous version's record.
    version = NumberAttribute(default=0)
    event_at = UnicodeAttribute(null=True)
    prev_event_at = UnicodeAttribute(null=True)
    event_action = UnicodeAttribute(null=True)
    event_actor = UnicodeAttribute(null=True)
    event_data = UnicodeAttribute(null=True)

    team_l1 = TeamL1Index()
    team_l2 = TeamL2Index()
    team_l3 = TeamL3Index()
    joined = UsersJoinedIndex()
    named = UsersNamedIndex()


class ShareModel(Model):
    """A share code (≤ 32 chars, usable as a wxacode scene) and its scan counters."""

    class Meta:
        table_name = _Unconfigured("shares")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#code
    tenant = UnicodeAttribute()
    code = UnicodeAttribute()
    sharer = UnicodeAttribute()
    product_id = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)
    coupon_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    scans = NumberAttribute(default=0)
    binds = NumberAttribute(default=0)


class AuditByDayIndex(GlobalSecondaryIndex["AuditModel"]):
    """Audit records of one tenant, day and shard: export by date without a hot partition."""

    class Meta:
        index_name = "by_day"
        projection = IncludeProjection(["entity", "action", "actor", "at", "data", "hash", "prev_hash"])

    day_shard = UnicodeAttribute(hash_key=True)  # tenant#YYYY-MM-DD#n
    sk = UnicodeAttribute(range_key=True)


class AuditModel(Model):
    """An append-only audit record; each one's hash chains to the entity's previous record."""

    class Meta:
        table_name = _Unconfigured("audit")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#entity
    sk = UnicodeAttribute(range_key=True)  # at#id
    tenant = UnicodeAttribute()
    entity = UnicodeAttribute()
    action = UnicodeAttribute()
    actor = UnicodeAttribute()
    at = UnicodeAttribute()
    data = UnicodeAttribute()  # canonical JSON
    hash = UnicodeAttribute()
    prev_hash = UnicodeAttribute()
    day_shard = UnicodeAttribute()

    by_day = AuditByDayIndex()


class AdminsByTenantIndex(GlobalSecondaryIndex["AdminModel"]):
    """A tenant's operators by username (the owners' operators page)."""

    class Meta:
        index_name = "by_tenant"
        projection = IncludeProjection(["role", "disabled", "created_at", "token_version"])

    tenant = UnicodeAttribute(hash_key=True)
    username = UnicodeAttribute(range_key=True)


class AdminModel(Model):
    """An operator of the admin console with a role and an argon2 password hash."""

    class Meta:
        table_name = _Unconfigured("admins")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#username
    by_tenant = AdminsByTenantIndex()
    tenant = UnicodeAttribute()
    username = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    role = UnicodeAttribute()
    created_at = UnicodeAttribute()
    disabled = BooleanAttribute(default=False)
    token_version = NumberAttribute(default=0)


class MerchantModel(Model):
    """A merchant of the server-to-server order API, bound to exactly one tenant.

    Its HMAC secrets are stored encrypted (AES-GCM under the deployment's merchant key, the
    merchant id and tenant as associated data); `previous` stays valid until retired, so a
    merchant can rotate without downtime. The merchant id is the key: one id, one tenant.
    """

    class Meta:
        table_name = _Unconfigured("merchants")
        billing_mode = "PAY_PER_REQUEST"

    merchant = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    name = UnicodeAttribute()
    current = UnicodeAttribute()  # base64(nonce + ciphertext) of the newest secret
    previous = UnicodeAttribute(null=True)  # the secret before the last rotation, until retired
    created_at = UnicodeAttribute()
    rotated_at = UnicodeAttribute(null=True)
    disabled = BooleanAttribute(default=False)
    version = NumberAttribute(default=1)


class TenantModel(Model):
    """One mini-program (appid) and its own settings."""

    class Meta:
        table_name = _Unconfigured("tenants")
        billing_mode = "PAY_PER_REQUEST"

    tenant = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    timezone = UnicodeAttribute(default="Asia/Shanghai")
    created_at = UnicodeAttribute()
    active_plan = NumberAttribute(null=True)
    withdrawal_rules = UnicodeAttribute(null=True)  # canonical JSON of withdrawal.WithdrawalRules


class CatalogIndex(GlobalSecondaryIndex["ProductModel"]):
    """A tenant's products by id (the mini-program's product list)."""

    class Meta:
        index_name = "by_tenant"
        projection = IncludeProjection(["name", "price_fen", "active", "repurchase_days"])

    tenant = UnicodeAttribute(hash_key=True)
    product_id = UnicodeAttribute(range_key=True)


class ProductModel(Model):
    """A product with its server-side price in fen."""

    class Meta:
        table_name = _Unconfigured("products")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#product
    tenant = UnicodeAttribute()
    product_id = UnicodeAttribute()
    name = UnicodeAttribute()
    price_fen = NumberAttribute()
    active = BooleanAttribute(default=True)
    repurchase_days = NumberAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()

    by_tenant = CatalogIndex()


class CouponModel(Model):
    """Coupon templates ("spend X, save Y", sk `template`) and the coupons users claimed (sk `claim#<user>#<n>`)."""

    class Meta:
        table_name = _Unconfigured("coupons")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#coupon
    sk = UnicodeAttribute(range_key=True)
    tenant = UnicodeAttribute()
    coupon_id = UnicodeAttribute()
    data = UnicodeAttribute()  # canonical JSON of the template or the claim
    state = UnicodeAttribute(null=True)  # claims: claimed / used
    claims = NumberAttribute(default=0)
    created_at = UnicodeAttribute()


class PlanModel(Model):
    """One immutable version of a tenant's commission plan (the active one is named on the tenant)."""

    class Meta:
        table_name = _Unconfigured("plans")
        billing_mode = "PAY_PER_REQUEST"

    tenant = UnicodeAttribute(hash_key=True)
    version = NumberAttribute(range_key=True)
    body = UnicodeAttribute()  # canonical JSON of the plan
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute()
    activated_at = UnicodeAttribute(null=True)


class BuyerOrdersIndex(GlobalSecondaryIndex["OrderModel"]):
    """A buyer's orders, newest first. Keys only: the key is set when the order is placed and
    never changes, so no later write of the order touches the index (a projected status would
    rewrite the entry at every payment, receipt and refund); the list reads its page's orders in
    one batch get."""

    class Meta:
        index_name = "by_buyer"
        projection = KeysOnlyProjection()

    buyer_key = UnicodeAttribute(hash_key=True)  # tenant#buyer
    placed_at = UnicodeAttribute(range_key=True)


class OpenOrdersIndex(GlobalSecondaryIndex["OrderModel"]):
    """Paid orders waiting for receipt, oldest payment first (sparse: only they carry open_key)."""

    class Meta:
        index_name = "open_orders"
        projection = IncludeProjection(["order_id", "tenant"])

    open_key = UnicodeAttribute(hash_key=True)  # tenant#paid
    paid_at = UnicodeAttribute(range_key=True)


class PendingAtWeChatIndex(GlobalSecondaryIndex["OrderModel"]):
    """Orders waiting for WeChat Pay: handed over and not paid yet, or with a refund requested and
    not finished; oldest first (sparse: only they carry pending_key). Payment reconciliation asks
    WeChat about them."""

    class Meta:
        index_name = "pending_at_wechat"
        projection = IncludeProjection(["order_id", "tenant"])

    pending_key = UnicodeAttribute(hash_key=True)  # tenant#pending
    pending_since = UnicodeAttribute(range_key=True)


class SoldOrdersIndex(GlobalSecondaryIndex["OrderModel"]):
    """Every paid order of a tenant by time of payment, across receipt and refunds (sparse: the
    key is set when the order is paid and never removed); the plan simulator replays days of it.
    Projects what the commission rules need, so a replay reads nothing else per order."""

    class Meta:
        index_name = "sold"
        projection = IncludeProjection(["order_id", "buyer", "lines", "attribution", "amount_fen", "refunded_fen"])

    sold_key = UnicodeAttribute(hash_key=True)  # tenant#sold#n
    paid_at = UnicodeAttribute(range_key=True)


class ListedOrdersIndex(GlobalSecondaryIndex["OrderModel"]):
    """Every order of a tenant by time of placing, newest first over its shards (the console's
    orders list, the orders export): the key is set when the order is created and never changes.
    Projects only what never changes either (the attribution, filtered on by promoter), so no
    later write of the order touches the index; the list reads its page's orders for their state."""

    class Meta:
        index_name = "listed"
        projection = IncludeProjection(["order_id", "attribution"])

    listed_key = UnicodeAttribute(hash_key=True)  # tenant#orders#n
    placed_at = UnicodeAttribute(range_key=True)


class OrderModel(Model):
    """An order with its attribution snapshot; its stream drives the commission engine."""

    class Meta:
        table_name = _Unconfigured("orders")
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"

    pk = UnicodeAttribute(hash_key=True)  # tenant#order
    tenant = UnicodeAttribute()
    order_id = UnicodeAttribute()
    buyer = UnicodeAttribute()
    buyer_key = UnicodeAttribute()
    source = UnicodeAttribute()  # miniprogram / merchant:<id>
    lines = UnicodeAttribute()  # canonical JSON: product_id, name, qty, unit_price_fen, paid_fen
    list_fen = NumberAttribute()
    discount_fen = NumberAttribute(default=0)
    amount_fen = NumberAttribute()
    refunded_fen = NumberAttribute(default=0)
    status = UnicodeAttribute()
    coupon = UnicodeAttribute(null=True)
    attribution = UnicodeAttribute()  # canonical JSON: upline, share_code, plan_version
    placed_at = UnicodeAttribute()
    paid_at = UnicodeAttribute(null=True)
    received_at = UnicodeAttribute(null=True)
    transaction_id = UnicodeAttribute(null=True)
    open_key = UnicodeAttribute(null=True)
    sold_key = UnicodeAttribute(null=True)
    listed_key = UnicodeAttribute(null=True)
    pending_key = UnicodeAttribute(null=True)
    pending_since = UnicodeAttribute(null=True)
    prepaid_at = UnicodeAttribute(null=True)
    pay_expires_at = UnicodeAttribute(null=True)
    refunds = UnicodeAttribute(null=True)  # canonical JSON: refund number -> amount, state, reason, ...
    version = NumberAttribute(default=0)
    audit_hash = UnicodeAttribute(null=True)  # the head of the order's audit chain
    event_at = UnicodeAttribute(null=True)
    prev_event_at = UnicodeAttribute(null=True)
    event_action = UnicodeAttribute(null=True)
    event_actor = UnicodeAttribute(null=True)
    event_data = UnicodeAttribute(null=True)

    by_buyer = BuyerOrdersIndex()
    open_orders = OpenOrdersIndex()
    sold = SoldOrdersIndex()
    listed = ListedOrdersIndex()
    pending_at_wechat = PendingAtWeChatIndex()


class LedgerByOrderIndex(GlobalSecondaryIndex["LedgerModel"]):
    class Meta:
        index_name = "by_order"
        projection = IncludeProjection(["promoter", "level", "event", "amount_fen", "state"])

    order_key = UnicodeAttribute(hash_key=True)  # tenant#order
    sk = UnicodeAttribute(range_key=True)


class DueLinesIndex(GlobalSecondaryIndex["LedgerModel"]):
    """Frozen lines by the time they become available (sparse: only frozen lines carry frozen_key)."""

    class Meta:
        index_name = "due"
        projection = IncludeProjection(["promoter", "order_id", "level", "event", "amount_fen", "state"])

    frozen_key = UnicodeAttribute(hash_key=True)  # tenant#frozen
    frozen_until = UnicodeAttribute(range_key=True)


class LedgerModel(Model):
    """One commission line: one level's earning (or reversal) from one order event."""

    class Meta:
        table_name = _Unconfigured("ledger")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#promoter
    sk = UnicodeAttribute(range_key=True)  # order#level#event
    tenant = UnicodeAttribute()
    promoter = UnicodeAttribute()
    order_id = UnicodeAttribute()
    order_key = UnicodeAttribute()
    level = NumberAttribute()
    event = UnicodeAttribute()  # paid / received / refund-<id>
    amount_fen = NumberAttribute()  # negative for reversals
    state = UnicodeAttribute()  # pending / frozen / available
    buyer = UnicodeAttribute()
    trace = UnicodeAttribute()  # canonical JSON
    created_at = UnicodeAttribute()
    frozen_until = UnicodeAttribute(null=True)
    frozen_key = UnicodeAttribute(null=True)

    by_order = LedgerByOrderIndex()
    due = DueLinesIndex()


class AccountModel(Model):
    """A promoter's money by state; always the sum of their ledger lines per state."""

    class Meta:
        table_name = _Unconfigured("accounts")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#promoter
    pending_fen = NumberAttribute(default=0)
    frozen_fen = NumberAttribute(default=0)
    available_fen = NumberAttribute(default=0)
    withdrawing_fen = NumberAttribute(default=0)
    paid_fen = NumberAttribute(default=0)
    # withdrawals requested on `wd_day` (tenant's timezone): the per-day limits, kept with the
    # money so that one conditional update checks the balance and the limits together
    wd_day = UnicodeAttribute(null=True)
    wd_day_count = NumberAttribute(null=True)
    wd_day_fen = NumberAttribute(null=True)


class PromoterWithdrawalsIndex(GlobalSecondaryIndex["WithdrawalModel"]):
    class Meta:
        index_name = "by_promoter"
        projection = IncludeProjection(["withdrawal_id", "amount_fen", "fee_fen", "state", "created_at"])

    promoter_key = UnicodeAttribute(hash_key=True)  # tenant#promoter
    created_at = UnicodeAttribute(range_key=True)


class StateWithdrawalsIndex(GlobalSecondaryIndex["WithdrawalModel"]):
    """Withdrawals by state, oldest first: the review queue, the payout run, reconciliation."""

    class Meta:
        index_name = "by_state"
        projection = IncludeProjection(["withdrawal_id", "promoter", "amount_fen", "fee_fen", "updated_at"])

    state_key = UnicodeAttribute(hash_key=True)  # tenant#state
    created_at = UnicodeAttribute(range_key=True)


class RunWithdrawalsIndex(GlobalSecondaryIndex["WithdrawalModel"]):
    """Withdrawals by the payout run that sent them (the run report)."""

    class Meta:
        index_name = "by_run"
        projection = IncludeProjection(["state", "amount_fen", "fee_fen", "fail_reason"])

    run_key = UnicodeAttribute(hash_key=True)  # tenant#run
    withdrawal_id = UnicodeAttribute(range_key=True)


class WithdrawalModel(Model):
    """A promoter's withdrawal (提现) and its transfer bill; every change is one conditional
    transaction that also writes the withdrawal's next chained audit record."""

    class Meta:
        table_name = _Unconfigured("withdrawals")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#withdrawal
    tenant = UnicodeAttribute()
    withdrawal_id = UnicodeAttribute()
    promoter = UnicodeAttribute()
    promoter_key = UnicodeAttribute()
    openid = UnicodeAttribute()
    amount_fen = NumberAttribute()  # reserved from available
    fee_fen = NumberAttribute()  # kept by the merchant; the user receives amount - fee
    state = UnicodeAttribute()
    state_key = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    real_name = UnicodeAttribute(null=True)  # sent encrypted when WeChat requires it
    reason = UnicodeAttribute(null=True)  # rejection reason
    run_key = UnicodeAttribute(null=True)
    run_id = UnicodeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    sent_at = UnicodeAttribute(null=True)
    bill_no = UnicodeAttribute(null=True)  # WeChat's transfer_bill_no
    provider_state = UnicodeAttribute(null=True)
    package_info = UnicodeAttribute(null=True)
    fail_reason = UnicodeAttribute(null=True)
    create_at = UnicodeAttribute(null=True)  # the last create call of the bill, recorded before it
    not_found = NumberAttribute(null=True)  # NOT_FOUND answers to bill queries since that call
    refusal = UnicodeAttribute(null=True)  # WeChat refused that call (code: message)
    version = NumberAttribute(default=0)
    audit_hash = UnicodeAttribute(null=True)  # hash of the newest audit record (the chain's head)

    by_promoter = PromoterWithdrawalsIndex()
    by_state = StateWithdrawalsIndex()
    by_run = RunWithdrawalsIndex()


class PayoutRunModel(Model):
    """One payout run: what it enqueued (progress while it pages, totals when done)."""

    class Meta:
        table_name = _Unconfigured("payout_runs")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant
    run_id = UnicodeAttribute(range_key=True)  # run-<utc time>-<random>: newest last
    started_at = UnicodeAttribute()
    finished_at = UnicodeAttribute(null=True)
    status = UnicodeAttribute()  # running / done
    enqueued = NumberAttribute(default=0)
    enqueued_fen = NumberAttribute(default=0)
    actor = UnicodeAttribute()


class StatsModel(Model):
    """Counters updated with ADD: e.g. a promoter's attributed sales per month (ladder tiers)."""

    class Meta:
        table_name = _Unconfigured("stats")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#scope
    period = UnicodeAttribute(range_key=True)  # e.g. 2026-11 in the tenant's timezone
    sales_fen = NumberAttribute(default=0)
    commission_fen = NumberAttribute(default=0)
    orders = NumberAttribute(default=0)
    # Report counters (chalicelib/counters.py), sparse: only the counters a scope uses exist.
    paid_fen = NumberAttribute(null=True)
    refunds_fen = NumberAttribute(null=True)
    first_orders = NumberAttribute(null=True)
    new_bindings = NumberAttribute(null=True)
    new_promoters = NumberAttribute(null=True)
    scans = NumberAttribute(null=True)
    withdrawals_fen = NumberAttribute(null=True)
    payouts_fen = NumberAttribute(null=True)
    commission_fen_1 = NumberAttribute(null=True)
    commission_fen_2 = NumberAttribute(null=True)
    commission_fen_3 = NumberAttribute(null=True)
    team_1 = NumberAttribute(null=True)
    team_2 = NumberAttribute(null=True)
    team_3 = NumberAttribute(null=True)
    orders_1 = NumberAttribute(null=True)
    orders_2 = NumberAttribute(null=True)
    orders_3 = NumberAttribute(null=True)
    sales_fen_1 = NumberAttribute(null=True)
    sales_fen_2 = NumberAttribute(null=True)
    sales_fen_3 = NumberAttribute(null=True)
    ref = UnicodeAttribute(null=True)  # a marker's subject (the buyer's first paid order)


class NonceModel(Model):
    """What the merchant API remembers for a while: request nonces (replay guard) and applied
    event ids (idempotency). DynamoDB deletes an item some time after `expires_at` (TTL)."""

    class Meta:
        table_name = _Unconfigured("nonces")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#merchant#nonce, or tenant#merchant#event#<event id>
    expires_at = TTLAttribute()
    ref = UnicodeAttribute(null=True)  # events: the order the event was applied to
    hits = NumberAttribute(null=True)  # throttles: attempts counted in the window


class ParkedListIndex(GlobalSecondaryIndex["ParkedModel"]):
    """A tenant's parked (or replayed) stream records, oldest parking first (sparse: records only)."""

    class Meta:
        index_name = "by_state"
        projection = IncludeProjection(
            [
                "tenant",
                "source",
                "entity",
                "sequence",
                "action",
                "reason",
                "state",
                "attempts",
                "first_error",
                "last_error",
                "parked_at",
                "replayed_at",
            ]
        )

    list_key = UnicodeAttribute(hash_key=True)  # tenant#state
    list_sk = UnicodeAttribute(range_key=True)  # parked_at#source#sequence


class ParkedModel(Model):
    """Stream records that kept failing, kept whole until a redrive applies them (never deleted).

    One partition per tenant and source, four kinds of item told apart by the sort key:
    `rec#<item key>#<sequence>` a parked record (full Lambda record as JSON), `ent#<item key>`
    how many records of an item wait (while > 0 its later records park behind), `all` how many
    wait for the tenant and source (the stream's cheap first check), `try#<sequence>` failed
    deliveries of a record not parked yet (expires with the stream's 24 h retention).
    """

    class Meta:
        table_name = _Unconfigured("parked")
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)  # tenant#source
    sk = UnicodeAttribute(range_key=True)
    tenant = UnicodeAttribute(null=True)
    source = UnicodeAttribute(null=True)
    entity = UnicodeAttribute(null=True)
    sequence = UnicodeAttribute(null=True)
    record = UnicodeAttribute(null=True)  # the Lambda stream record, JSON
    action = UnicodeAttribute(null=True)  # the item's event_action in the record, when it has one
    reason = UnicodeAttribute(null=True)  # failed / behind
    state = UnicodeAttribute(null=True)  # parked / replayed
    attempts = NumberAttribute(null=True)
    first_error = UnicodeAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    parked_at = UnicodeAttribute(null=True)
    replayed_at = UnicodeAttribute(null=True)
    replayed_by = UnicodeAttribute(null=True)
    list_key = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    waiting = NumberAttribute(null=True)  # ent# and all items
    expires_at = TTLAttribute(null=True)  # try# items only

    by_state = ParkedListIndex()


class ActiveExportsIndex(GlobalSecondaryIndex["ExportModel"]):
    """A tenant's exports still to run, oldest first (sparse: only queued and running ones carry it)."""

    class Meta:
        index_name = "active"
        projection = IncludeProjection(["state", "lease_until"])

    active_key = UnicodeAttribute(hash_key=True)  # tenant
    export_id = UnicodeAttribute(range_key=True)


class ExportModel(Model):
    """One export of a tenant's data to a CSV or XLSX file, and where its run stands.

    A run longer than one invocation saves its position here (the source cursor, the multipart
    upload and its parts) and continues in the next; the lease keeps two invocations apart.
    """

    class Meta:
        table_name = _Unconfigured("exports")
        billing_mode = "PAY_PER_REQUEST"

    tenant = UnicodeAttribute(hash_key=True)
    export_id = UnicodeAttribute(range_key=True)  # exp-<utc time>-<random>: newest last
    kind = UnicodeAttribute()  # ledger / orders / withdrawals / audit / promoters
    format = UnicodeAttribute()  # csv / xlsx
    first_day = UnicodeAttribute()  # YYYY-MM-DD in the tenant's timezone
    last_day = UnicodeAttribute()
    state = UnicodeAttribute()  # queued / running / done / failed
    actor = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    finished_at = UnicodeAttribute(null=True)
    rows = NumberAttribute(default=0)
    progress = NumberAttribute(default=0)  # per cent
    phase = UnicodeAttribute(default="rows")  # rows (reading the source) / sheet (building the XLSX)
    cursor = UnicodeAttribute(null=True)  # JSON: where the source read stopped
    object_key = UnicodeAttribute(null=True)  # where the rows go (the file, or the XLSX's staging)
    upload_id = UnicodeAttribute(null=True)
    parts = UnicodeAttribute(null=True)  # JSON: [[part number, etag], ...]
    size = NumberAttribute(default=0)  # bytes uploaded
    file_key = UnicodeAttribute(null=True)  # the finished file
    error = UnicodeAttribute(null=True)
    runs = NumberAttribute(default=0)  # invocations that worked on it
    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(default=0)  # unix seconds
    active_key = UnicodeAttribute(null=True)

    active = ActiveExportsIndex()


LOGICAL_NAMES: dict[type[Model], str] = {
    UserModel: "users",
    ShareModel: "shares",
    AuditModel: "audit",
    AdminModel: "admins",
    TenantModel: "tenants",
    ProductModel: "products",
    CouponModel: "coupons",
    PlanModel: "plans",
    OrderModel: "orders",
    LedgerModel: "ledger",
    AccountModel: "accounts",
    StatsModel: "stats",
    NonceModel: "nonces",
    WithdrawalModel: "withdrawals",
    PayoutRunModel: "payout_runs",
    ParkedModel: "parked",
    MerchantModel: "merchants",
    ExportModel: "exports",
}
ALL_MODELS: tuple[type[Model], ...] = tuple(LOGICAL_NAMES)


def table_name(settings: Settings, logical: str) -> str:
    """The physical name of a table for these settings."""
    return f"{settings.table_prefix}-{logical}"


def configure(settings: Settings) -> None:
    """Point every model at this deployment's tables and endpoint (idempotent)."""
    for model, logical in LOGICAL_NAMES.items():
        meta = model.Meta
        meta.table_name = table_name(settings, logical)
        meta.host = settings.dynamodb_endpoint
        meta.region = settings.aws_region
        # DynamoDB Local on a busy laptop or CI box can refuse connections for a few seconds (its
        # accept queue is short): retry longer there; AWS keeps PynamoDB's usual three retries.
        meta.max_retry_attempts = 8 if settings.dynamodb_endpoint else 3
        model._connection = None
