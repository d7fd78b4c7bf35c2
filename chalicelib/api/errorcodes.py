"""Every error code the API answers, in one table: HTTP status, what a mini-program should show,
and what it means. The OpenAPI document carries it (`x-error-codes`), `docs/error-codes.md` is
printed from it (`python -m chalicelib.api.errorcodes > docs/error-codes.md`), and a unit test
scans chalicelib for `code="..."` so a new code cannot go undocumented.

"show" is the text for end users (Chinese, as the mini-program shows it); an empty "show" means
the user did nothing wrong and the app should show a generic 系统繁忙，请稍后再试 and report it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorCode:
    statuses: tuple[int, ...]
    show: str
    meaning: str
    source: str = "app"  # app | chalice (the framework) | gateway (API Gateway) | cli | worker (not HTTP)


def _e(status: int | tuple[int, ...], show: str, meaning: str, source: str = "app") -> ErrorCode:
    return ErrorCode(status if isinstance(status, tuple) else (status,), show, meaning, source)


RETRY = "系统繁忙，请稍后再试"
LOGIN_AGAIN = "登录已失效，请重新登录"

ERROR_CODES: dict[str, ErrorCode] = {
    # --- request shape (every route with a body, a cursor or a limit) ---------------------------
    "bad_request": _e(400, "", "generic refusal (also API Gateway's DEFAULT_4XX)", "app, gateway"),
    "invalid_json": _e(400, "", "the body is not valid JSON"),
    "invalid_body": _e(400, "", "the body has invalid or unknown fields; `details` lists them"),
    "body_too_deep": _e(400, "", "the JSON nests deeper than 20 levels"),
    "body_too_large": _e(413, "", "the body is larger than 64 KiB", "app, gateway"),
    "invalid_cursor": _e(400, "", "the cursor was not issued by this API (cursors are signed)"),
    "invalid_limit": _e(400, "", "limit is not an integer in its range"),
    "invalid_depth": _e(400, "", "depth is not 1, 2 or 3"),
    "invalid_version": _e(400, "", "the plan version is not a positive integer"),
    "invalid_amount_fen": _e(400, "请输入正确的金额", "amount_fen is not an integer in its range"),
    "invalid_level": _e(400, "", "level must be 1, 2 or 3"),
    "invalid_page": _e(400, "", "WeChat says the mini-program page of a share does not exist (41030)"),
    "invalid_state": _e(
        (400, 409), "当前状态不支持该操作", "unknown state filter (400), or the item is in the wrong state (409)"
    ),
    "invalid_source": _e(400, "", "source must be orders or users"),
    "invalid_idempotency_key": _e(400, "", "Idempotency-Key must be 1-64 characters"),
    "appid_required": _e(400, "", "no appid in the body, query or X-Appid and no default tenant"),
    # --- identity -----------------------------------------------------------------------------
    "missing_token": _e(401, LOGIN_AGAIN, "no `Authorization: Bearer` header"),
    "invalid_token": _e(401, LOGIN_AGAIN, "the token is malformed, forged or names an unknown tenant"),
    "token_expired": _e(401, LOGIN_AGAIN, "the token has expired: log in again (wx.login)"),
    "token_revoked": _e(401, LOGIN_AGAIN, "the operator was disabled, demoted or reset since the token was issued"),
    "tenant_mismatch": _e(401, LOGIN_AGAIN, "the token belongs to another mini-program than X-Appid / referer"),
    "unknown_user": _e((401, 404), LOGIN_AGAIN, "the token's user does not exist (401), or the user asked for (404)"),
    "unknown_tenant": _e(404, "", "unknown mini-program (appid)"),
    "invalid_code": _e(401, "登录失败，请重试", "WeChat refused the wx.login code (40029): get a new one"),
    "risky_user": _e(403, "账号存在风险，暂不能使用", "WeChat flagged the account as risky (40226)"),
    "invalid_credentials": _e(401, "用户名或密码错误", "operator login: wrong username or password"),
    "too_many_attempts": _e(429, "尝试次数过多，请稍后再试", "login throttled; wait Retry-After seconds"),
    "forbidden": _e(403, "没有权限", "the caller's role may not do this (operators: see the route's roles)"),
    "rate_limited": _e(429, "操作太频繁，请稍后再试", "WeChat's rate limit (45011); wait Retry-After seconds"),
    "too_many_requests": _e(429, RETRY, "API Gateway throttling (production)", "gateway"),
    "invalid_username": _e(400, "", "operator usernames are 3-32 of a-z, 0-9, _ . -"),
    "invalid_password": _e(400, "密码长度不符合要求", "the password's length is out of range"),
    "invalid_role": _e(400, "", "the role must be owner, ops, finance or auditor"),
    "operator_exists": _e(409, "", "an operator with this username exists"),
    "unknown_operator": _e(404, "", "no such operator"),
    "empty_change": _e(400, "", "name at least one of role, disabled, password"),
    "concurrent_change": _e(409, RETRY, "the operator changed at the same time; retry"),
    "last_owner": _e(409, "", "a mini-program keeps at least one enabled owner"),
    "wrong_password": _e(403, "当前密码错误", "the current password is wrong"),
    # --- merchant (server-to-server) -----------------------------------------------------------
    "bad_signature": _e(401, "", "missing or wrong HMAC signature headers (merchants) or WeChat Pay signature"),
    "stale_request": _e(401, "", "X-Timestamp is too far from the server's clock"),
    "replayed_nonce": _e(401, "", "this X-Nonce was used already"),
    "merchant_tenant_mismatch": _e(403, "", "the merchant belongs to another mini-program than X-Appid"),
    "merchant_api_unconfigured": _e(503, "", "merchant credentials are not configured on this stage"),
    "bad_merchant_id": _e(400, "", "admin CLI: the merchant id is not 1-64 of [A-Za-z0-9_-]", "cli"),
    "bad_secret": _e(400, "", "admin CLI: the merchant secret's length or characters are wrong", "cli"),
    "merchant_exists": _e(409, "", "admin CLI: the merchant id is taken", "cli"),
    "merchant_changed": _e(409, "", "admin CLI: the merchant changed meanwhile; retry", "cli"),
    "unknown_merchant": _e(404, "", "admin CLI: no such merchant", "cli"),
    "event_id_reused": _e(409, "", "the event_id was used for a different event"),
    "order_mismatch": _e(409, "", "the merchant order differs from the one stored under its id"),
    "invalid_occurred_at": _e(400, "", "occurred_at is in the future or older than the return window"),
    "invalid_amount": _e(400, "请输入正确的金额", "the amount is not positive or exceeds what is allowed"),
    "cannot_receive": _e(409, "订单状态已变化，请刷新", "the order cannot be confirmed as received in its state"),
    "cannot_cancel": _e(409, "订单状态已变化，请刷新", "only unpaid orders can be cancelled"),
    # --- catalog ------------------------------------------------------------------------------
    "invalid_price": _e(400, "", "price_fen out of range"),
    "invalid_product_id": _e(400, "", "product id not allowed"),
    "product_exists": _e(409, "", "a product with this id exists"),
    "product_changed": _e(409, RETRY, "the product changed meanwhile"),
    "unknown_product": _e((400, 404), "商品已下架", "the product does not exist or is not on sale"),
    "invalid_coupon": _e(400, "", "the coupon template is not valid (dates, amounts, products)"),
    "coupon_exists": _e(409, "", "a coupon with this id exists"),
    "unknown_coupon": _e(404, "优惠券不存在", "no such coupon"),
    "expired": _e(410, "优惠券已过期", "the coupon's validity ended"),
    "not_started": _e(409, "活动尚未开始", "the coupon cannot be claimed yet"),
    "sold_out": _e(409, "优惠券已抢光", "every coupon of this kind has been claimed"),
    "limit_reached": _e(409, "您已领取过该优惠券", "the per-user limit is reached"),
    "coupon_not_held": _e(409, "您没有可用的该优惠券", "the order names a coupon the buyer does not hold"),
    "coupon_not_applicable": _e(409, "该订单不满足优惠券使用条件", "threshold or products do not match"),
    # --- shares and binding -----------------------------------------------------------------
    "unknown_share": _e(404, "分享码无效", "no such share code"),
    "unknown_sharer": _e(404, "分享码无效", "the sharer no longer exists"),
    "share_code_busy": _e(409, RETRY, "no free share code was found; retry"),
    "invalid_scene": _e(400, "", "the wxacode scene is not allowed"),
    "cycle": _e(409, "", "rebinding would make a cycle"),
    "self_binding": _e(409, "", "a user cannot be their own upline"),
    "same_parent": _e(409, "", "the user already has this upline"),
    "tree_too_deep": _e(409, "", "rebinding would move the team beyond three levels"),
    "reason_required": _e(400, "", "a rebind needs a reason"),
    # --- orders and payments -----------------------------------------------------------------
    "invalid_lines": _e(400, "", "an order has 1 to 50 lines"),
    "invalid_qty": _e(400, "请选择正确的数量", "qty out of range"),
    "unknown_order": _e(404, "订单不存在", "no such order"),
    "not_payable": _e(409, "订单状态已变化，请刷新", "the order is not waiting for payment"),
    "payment_expired": _e(409, "订单已超时，请重新下单", "the pay window passed"),
    "payment_mismatch": _e(409, "", "WeChat's paid amount differs from the order's"),
    "order_paid": _e(409, "订单已支付", "the order was paid meanwhile (cancel refused)"),
    "order_closed": _e(409, "订单已关闭，请重新下单", "WeChat Pay closed the order"),
    "order_expired": _e(409, "订单已超时，请重新下单", "WeChat Pay says the order expired"),
    "invalid_payment": _e(400, "", "WeChat Pay refused the payment parameters"),
    "invalid_notify_url": _e(400, "", "the notify URL is not allowed by WeChat Pay"),
    "unknown_payment": _e(404, "", "WeChat Pay does not know the order"),
    "not_refundable": _e(409, "", "the order cannot be refunded (state or amount)"),
    "invalid_refund": _e(400, "", "WeChat Pay refused the refund"),
    "too_many_refunds": _e(409, "", "WeChat Pay allows at most 50 refunds per order"),
    "bad_notification": _e(400, "", "a WeChat notification that cannot be decrypted or parsed"),
    "stale_notification": _e(401, "", "a WeChat notification with an old timestamp"),
    # --- commission plans ----------------------------------------------------------------------
    "invalid_plan": _e(400, "", "the plan is not well formed or breaks a rule; `details` lists why"),
    "forbidden_fee": _e(400, "", "plans cannot charge promoters or pay for recruiting"),
    "unknown_plan": _e(404, "", "no such plan version"),
    "invalid_days": _e(400, "", "days is a whole number from 1 to 90"),
    "too_many_orders": _e(413, "", "more orders in those days than one simulation replays: fewer days"),
    # --- audit trail -------------------------------------------------------------------------
    "invalid_date": _e(400, "", "from and to are dates like 2026-11-29"),
    "invalid_range": _e(400, "", "from is after to"),
    "range_too_long": _e(400, "", "too many days at a time (366 to list, 31 to verify)"),
    "invalid_filter": _e(400, "", "an entity, action or actor filter is too long"),
    "invalid_month": _e(400, "月份格式不正确", "month is a month like 2026-11"),
    "invalid_by": _e(400, "", "a sources report is by channel, product or promoter"),
    # --- the console's promoters and orders -------------------------------------------------------
    "invalid_query": _e(400, "", "a promoter search (q) is at most 64 characters"),
    "invalid_promoter": _e(400, "", "the promoter filter of the orders list is at most 64 characters"),
    # --- withdrawals and payouts --------------------------------------------------------------
    "below_minimum": _e(400, "未达到最低提现金额", "below the tenant's minimum withdrawal"),
    "daily_amount_exceeded": _e((400, 409), "已超过今日提现额度", "the daily amount would be exceeded"),
    "daily_count_exceeded": _e(409, "今日提现次数已用完", "the daily number of withdrawals is used up"),
    "insufficient_balance": _e(409, "可提现余额不足", "available_fen is below the amount"),
    "negative_balance": _e(409, "账户余额异常，请联系客服", "a clawback left the account negative"),
    "real_name_required": _e(400, "请填写真实姓名", "WeChat needs the payee's real name from 2,000 yuan"),
    "idempotency_key_reused": _e(409, "", "the Idempotency-Key was used for a different request"),
    "unknown_withdrawal": _e(404, "提现记录不存在", "no such withdrawal"),
    "not_cancellable": _e(409, "该提现无法撤销", "WeChat refused to cancel the transfer"),
    "not_waiting": _e(409, "", "the transfer is not waiting for the user"),
    "not_waiting_for_confirmation": _e(409, "该提现无需确认收款", "the withdrawal is not waiting for confirmation"),
    "transfer_mismatch": _e(409, "", "WeChat's bill contradicts the withdrawal"),
    "invalid_transfer": _e(400, "", "the payout worker's check of a bill (recorded on the withdrawal)", "worker"),
    "unknown_transfer": _e(404, "", "WeChat does not know the transfer bill"),
    "invalid_rules": _e(400, "", "withdrawal rules out of range; `details` names each"),
    "unknown_run": _e(404, "", "no such payout run"),
    "unknown_job": _e(404, "", "no such job"),
    "invalid_kind": _e(400, "", "the export kind is not ledger, orders, withdrawals, audit or promoters"),
    "invalid_format": _e(400, "", "the export format is not csv or xlsx"),
    "export_not_found": _e(404, "", "no such export of this mini-program"),
    "invalid_link": _e(403, "", "the download link was changed or is incomplete"),
    "link_expired": _e(410, "", "the download link expired: open the export again for a fresh one"),
    # --- generic and upstream ------------------------------------------------------------------
    "not_found": _e(
        404, "", "not found (also unknown routes behind API Gateway, and sandbox-only routes)", "app, gateway"
    ),
    "busy": _e(409, RETRY, "a concurrent change won; retry the request"),
    "conflict": _e(409, RETRY, "generic conflict"),
    "unauthorized": _e(401, LOGIN_AGAIN, "generic authentication failure"),
    "gone": _e(410, "", "generic: the thing is over for good"),
    "upstream_error": _e(502, RETRY, "generic upstream failure"),
    "unavailable": _e(
        503, RETRY, "the service is unavailable (also API Gateway's DEFAULT_5XX, as 502)", "app, gateway"
    ),
    "wechat_error": _e(502, RETRY, "WeChat answered an unexpected error"),
    "wechat_unavailable": _e(502, RETRY, "WeChat did not answer"),
    "wechatpay_error": _e(502, RETRY, "WeChat Pay answered an unexpected error"),
    "wechatpay_unavailable": _e(502, RETRY, "WeChat Pay did not answer; retry"),
    "wechatpay_not_configured": _e(502, "", "the tenant has no WeChat Pay credentials"),
    "tenant_not_configured": _e(502, "", "the tenant has no WeChat app secret"),
    # --- the framework's own refusals, reshaped by the middleware --------------------------------
    "MethodNotAllowedError": _e(405, "", "the route exists, the method does not", "chalice"),
    "UnsupportedMediaType": _e(415, "", "Content-Type is not application/json", "chalice"),
    "BadRequestError": _e(400, "", "the framework refused the request", "chalice"),
}

# Every route may answer these without listing them: the framework's and the gateway's.
ANY_ROUTE = ("MethodNotAllowedError", "UnsupportedMediaType", "BadRequestError", "too_many_requests", "unavailable")


def markdown() -> str:
    """docs/error-codes.md: the table, by status then code."""
    lines = [
        "# Error codes",
        "",
        'Every error answers `{"error": {"code", "message"}}` (and sometimes `details`). Branch on `code`,',
        'never on `message`. "Show" is what the mini-program should show the user; an empty cell means the',
        f"user did nothing wrong: show {RETRY} and report the code. Printed from",
        "`chalicelib/api/errorcodes.py` (`python -m chalicelib.api.errorcodes > docs/error-codes.md`);",
        "a unit test keeps the two equal. The routes that answer each code are in `/v1/openapi.json`.",
        "",
        "| code | HTTP | show (mini-program) | meaning | from |",
        "|---|---|---|---|---|",
    ]
    for code, entry in sorted(ERROR_CODES.items(), key=lambda kv: (kv[1].statuses[0], kv[0])):
        statuses = ", ".join(str(s) for s in entry.statuses)
        lines.append(f"| `{code}` | {statuses} | {entry.show} | {entry.meaning} | {entry.source} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - a printing entry point
    print(markdown(), end="")
