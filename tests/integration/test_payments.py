"""WeChat Pay as production runs it, on DynamoDB Local with two tenants.

Every notification reaches the app only through the notify_url the twin was handed (routed by
the app's own router here, real HTTP in e2e); the twin keeps WeChat's side of orders and refunds.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Product, Role
from chalicelib.errors import StateConflict, UpstreamError
from chalicelib.orders import OrderStatus, RefundState
from chalicelib.services import logins, orders, refunds
from chalicelib.store import audit, get_store
from chalicelib.wechat import get_pay, get_transfer
from chalicelib.wechat.pay.sandbox import SandboxWeChatPay
from tests.stack import OTHER_TENANT, TEST_TENANT, Stack, unique


def twin(tenant: str) -> SandboxWeChatPay:
    client = get_pay(tenant)
    assert isinstance(client, SandboxWeChatPay)
    return client


def buyer_in(tenant: str) -> Principal:
    uid = logins.login(f"dev-{unique('buyer')}", tenant).user.id
    return Principal(tenant=tenant, subject=uid, role=Role.USER)


def product_in(tenant: str, price_fen: int) -> str:
    pid = unique("p").replace("-", "_")
    now = utcnow()
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="admin:owner", data={})
    assert get_store().products.create(
        Product(tenant, pid, f"商品 {pid}", price_fen, created_at=now, updated_at=now), event
    )
    return pid


def placed(tenant: str, price_fen: int = 10_000) -> tuple[Principal, str]:
    buyer = buyer_in(tenant)
    order = orders.place(buyer, [(product_in(tenant, price_fen), 1)], None, None)
    return buyer, order.id


def status(tenant: str, order_id: str) -> OrderStatus:
    order = get_store().orders.get(tenant, order_id)
    assert order is not None
    return order.status


@pytest.mark.parametrize("tenant", [TEST_TENANT, OTHER_TENANT])
def test_notify_urls_name_the_tenant_in_the_path_without_parameters(stack: Stack, tenant: str) -> None:
    pay_url = twin(tenant).config.notify_url
    assert pay_url.endswith(f"/v1/callbacks/wechatpay/{tenant}/payment")
    assert "?" not in pay_url
    transfer = get_transfer(tenant)
    assert transfer._config.notify_url.endswith(f"/v1/callbacks/wechatpay/{tenant}/transfer")  # type: ignore[attr-defined]


def test_each_tenant_has_its_own_merchant_keys(stack: Stack) -> None:
    a, b = twin(TEST_TENANT).config, twin(OTHER_TENANT).config
    assert a.mchid != b.mchid
    assert a.public_key_id != b.public_key_id


@pytest.mark.parametrize("tenant", [TEST_TENANT, OTHER_TENANT])
def test_a_payment_reaches_its_tenant_through_the_notify_url(stack: Stack, tenant: str) -> None:
    # Given an order of either tenant (the stack's default tenant is the first one)
    buyer, order_id = placed(tenant)
    # When the buyer pays in WeChat: the twin POSTs to the notify_url it was handed
    view = orders.sandbox_pay_success(buyer, order_id)
    # Then the order is paid, with WeChat's success time
    assert view["status"] == "paid"
    state = twin(tenant).query(order_id)
    assert state is not None and state.trade_state == "SUCCESS"
    order = get_store().orders.get(tenant, order_id)
    assert order is not None and order.paid_at == datetime.fromisoformat(str(state.success_time)).astimezone(UTC)


def test_a_notification_signed_for_one_tenant_is_refused_at_another_tenants_url(stack: Stack) -> None:
    from app import app

    buyer, order_id = placed(OTHER_TENANT)
    orders.pay(buyer, order_id)
    openid = get_store().users.get(OTHER_TENANT, buyer.subject).openid  # type: ignore[union-attr]
    headers, body = twin(OTHER_TENANT).notification_for(order_id, 10_000, openid)
    response = Client(app).http.post(
        f"/v1/callbacks/wechatpay/{TEST_TENANT}/payment",
        headers={**headers, "Content-Type": "application/json"},
        body=body,
    )
    assert response.status_code in (400, 401)
    assert status(OTHER_TENANT, order_id) is OrderStatus.CREATED


def test_the_old_callback_path_without_a_tenant_is_gone(stack: Stack) -> None:
    from app import app

    response = Client(app).http.post("/v1/callbacks/wechatpay/payment", body=b"{}")
    assert response.status_code in (403, 404)


def test_a_notify_url_with_a_query_string_is_refused_like_wechat_does(tmp_path: Any) -> None:
    from chalicelib.wechat.pay.keys import sandbox_config

    config, key = sandbox_config("https://api.example.com/v1/callbacks/wechatpay/payment?appid=wx1", "wx1")
    client = SandboxWeChatPay(config, key, db_path=tmp_path / "p.sqlite3")
    with pytest.raises(UpstreamError):
        client.jsapi_prepay(
            out_trade_no="T2026112900001", description="x", amount_fen=100, payer_openid="o1",
            time_expire=utcnow() + timedelta(hours=1),
        )  # fmt: skip


def test_a_cancelled_order_is_closed_at_wechat_and_cannot_be_paid(stack: Stack) -> None:
    buyer, order_id = placed(TEST_TENANT)
    orders.pay(buyer, order_id)
    orders.cancel(buyer, order_id)
    state = twin(TEST_TENANT).query(order_id)
    assert state is not None and state.trade_state == "CLOSED"
    with pytest.raises(StateConflict) as refused:
        twin(TEST_TENANT).user_pays(order_id)
    assert refused.value.code == "order_closed"


def test_a_payment_arriving_for_a_cancelled_order_is_refunded_at_once(stack: Stack) -> None:
    # Given WeChat cannot be reached when the buyer cancels: the order is cancelled anyway
    buyer, order_id = placed(TEST_TENANT)
    orders.pay(buyer, order_id)
    twin(TEST_TENANT).inject("close_unavailable", ref=order_id)
    orders.cancel(buyer, order_id)
    # When the payment still goes through at WeChat
    twin(TEST_TENANT).user_pays(order_id)
    stack.drain()
    # Then the money goes straight back, and the order stays cancelled
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None and order.status is OrderStatus.CANCELLED
    late = order.refund(f"{order_id}RLATE")
    assert late is not None and late.late_payment and late.amount_fen == 10_000
    assert late.state is RefundState.SUCCEEDED
    assert twin(TEST_TENANT).query_refund(late.number) is not None


def test_a_lost_notification_is_recovered_by_reconciliation_with_wechats_payment_time(stack: Stack) -> None:
    # Given a payment whose notification never arrives
    buyer, order_id = placed(TEST_TENANT)
    orders.pay(buyer, order_id)
    twin(TEST_TENANT).inject("drop_notification", ref=order_id)
    twin(TEST_TENANT).user_pays(order_id)
    assert status(TEST_TENANT, order_id) is OrderStatus.CREATED
    success_time = twin(TEST_TENANT).query(order_id).success_time  # type: ignore[union-attr]
    # When reconciliation runs later
    summary = orders.reconcile_payments(utcnow() + timedelta(minutes=30), TEST_TENANT)
    # Then the order is paid, at WeChat's time, not the reconciliation's
    assert summary["paid"] >= 1
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None and order.status is OrderStatus.PAID
    assert order.paid_at == datetime.fromisoformat(str(success_time)).astimezone(UTC)
    # and running it again changes nothing
    again = orders.reconcile_payments(utcnow() + timedelta(minutes=31), TEST_TENANT)
    assert order_id not in str(again) and get_store().orders.get(TEST_TENANT, order_id).version_tag == order.version_tag  # type: ignore[union-attr]


def test_an_order_left_unpaid_past_its_pay_window_is_closed_and_cancelled(stack: Stack) -> None:
    buyer, order_id = placed(TEST_TENANT)
    orders.pay(buyer, order_id)
    orders.reconcile_payments(utcnow() + timedelta(days=1), TEST_TENANT)
    assert status(TEST_TENANT, order_id) is OrderStatus.CANCELLED
    assert twin(TEST_TENANT).query(order_id).trade_state == "CLOSED"  # type: ignore[union-attr]


def paid_order(stack: Stack, tenant: str = TEST_TENANT, price_fen: int = 10_000) -> str:
    buyer, order_id = placed(tenant, price_fen)
    orders.sandbox_pay_success(buyer, order_id)
    assert status(tenant, order_id) is OrderStatus.PAID
    return order_id


def owner(tenant: str = TEST_TENANT) -> Principal:
    return Principal(tenant=tenant, subject="owner", role=Role.OWNER)


def test_a_refund_is_requested_first_then_succeeds_by_notification(stack: Stack) -> None:
    order_id = paid_order(stack)
    refund, created = refunds.request(owner(), order_id, 3_000, "broken")
    assert created and refund["state"] == "requested" and refund["refund_id"] == f"{order_id}R01"
    assert get_store().orders.get(TEST_TENANT, order_id).refunded_fen == 3_000  # type: ignore[union-attr]
    stack.drain()  # WeChat finishes the refund and POSTs REFUND.SUCCESS
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None and order.refund(f"{order_id}R01").state is RefundState.SUCCEEDED  # type: ignore[union-attr]
    assert order.pending_since is None


@pytest.mark.parametrize("fault", ["refund_abnormal", "refund_closed"])
def test_a_refund_that_fails_at_wechat_gives_the_amount_back(stack: Stack, fault: str) -> None:
    order_id = paid_order(stack)
    twin(TEST_TENANT).inject(fault, ref=f"{order_id}R01")
    refunds.request(owner(), order_id, 10_000, "returned")
    stack.drain()
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None and order.refunded_fen == 0
    assert order.refund(f"{order_id}R01").state is RefundState.FAILED  # type: ignore[union-attr]
    # a new refund is a new number, so WeChat never answers it with the failed one
    again, _ = refunds.request(owner(), order_id, 10_000, "returned again")
    assert again["refund_id"] == f"{order_id}R02"


def test_a_double_submitted_refund_is_recorded_and_refunded_once(stack: Stack) -> None:
    order_id = paid_order(stack)
    results: list[Any] = []

    def submit() -> None:
        try:
            results.append(refunds.request(owner(), order_id, 3_000, "double click"))
        except StateConflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None and order.refunded_fen == 3_000 and len(order.refunds) == 1
    assert sum(1 for r in results if isinstance(r, tuple) and r[1]) == 1


def test_the_same_refund_submitted_again_a_moment_later_is_the_same_refund(stack: Stack) -> None:
    order_id = paid_order(stack)
    first, created = refunds.request(owner(), order_id, 2_000, "double click")
    second, again = refunds.request(owner(), order_id, 2_000, "double click")
    assert created and not again and first["refund_id"] == second["refund_id"]
    # a different refund is a new one
    third, new = refunds.request(owner(), order_id, 2_000, "another item")
    assert new and third["refund_id"] == f"{order_id}R02"
    assert get_store().orders.get(TEST_TENANT, order_id).refunded_fen == 4_000  # type: ignore[union-attr]


def test_an_idempotency_key_makes_a_retried_refund_the_same_refund(stack: Stack) -> None:
    order_id = paid_order(stack)
    first, created = refunds.request(owner(), order_id, 1_000, "r", key="k-1")
    second, again = refunds.request(owner(), order_id, 1_000, "r", key="k-1")
    assert created and not again and first["refund_id"] == second["refund_id"]
    assert get_store().orders.get(TEST_TENANT, order_id).refunded_fen == 1_000  # type: ignore[union-attr]


def test_a_refund_lost_at_wechat_is_asked_again_under_the_same_number(stack: Stack) -> None:
    order_id = paid_order(stack)
    twin(TEST_TENANT).inject("refund_unavailable", ref=f"{order_id}R01")
    refund, _ = refunds.request(owner(), order_id, 2_000, "r")
    assert refund["state"] == "requested" and twin(TEST_TENANT).query_refund(f"{order_id}R01") is None
    orders.reconcile_payments(utcnow() + timedelta(minutes=30), TEST_TENANT)
    assert twin(TEST_TENANT).query_refund(f"{order_id}R01") is not None
    stack.drain()
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order.refund(f"{order_id}R01").state is RefundState.SUCCEEDED  # type: ignore[union-attr]


def test_every_order_version_has_its_audit_record_without_any_stream(stack: Stack) -> None:
    # Given an order placed, prepaid, paid and partly refunded, with no stream delivered
    order_id = paid_order(stack)
    refunds.request(owner(), order_id, 1_000, "r")
    order = get_store().orders.get(TEST_TENANT, order_id)
    records = list(audit.for_entity(TEST_TENANT, f"order:{order_id}"))
    # Then each version has its record, chained
    actions = [r.action for r in records]
    assert actions[:4] == ["order.created", "order.prepaid", "order.paid", "order.refunded"]
    assert audit.verify_chain(records)
    assert order is not None


def test_an_expired_order_wechat_never_knew_is_cancelled_without_a_close_call(stack: Stack) -> None:
    # Given an order recorded as handed to WeChat Pay whose prepay never reached it
    _, order_id = placed(TEST_TENANT)
    order = get_store().orders.get(TEST_TENANT, order_id)
    assert order is not None
    event = AuditEvent(entity=f"order:{order_id}", action="order.prepaid", actor="test", data={})
    assert get_store().orders.prepaid(order, when=utcnow(), expires_at=utcnow() + timedelta(hours=2), event=event)
    assert twin(TEST_TENANT).query(order_id) is None
    # When reconciliation runs after the pay window: no error, the order is cancelled
    summary = orders.reconcile_payments(utcnow() + timedelta(days=1), TEST_TENANT)
    assert summary["errors"] == 0
    assert status(TEST_TENANT, order_id) is OrderStatus.CANCELLED
