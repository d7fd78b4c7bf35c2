"""End to end over HTTP: order → WeChat Pay notification → commission for three promoters → refund."""

from __future__ import annotations

import dataclasses
import itertools

from chalicelib.store import get_store
from tests.e2e.conftest import LiveApi, eventually
from tests.stack import OTHER_TENANT, unique


def account(api: LiveApi, token: str) -> dict[str, int]:
    response = api.call("GET", "/v1/me/account", token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_order_pay_commission_refund(live_api: LiveApi) -> None:
    owner = live_api.admin("owner")
    plan = live_api.call("POST", "/v1/admin/plans", owner, json={"rates_bps": [1000, 500, 200], "cap_bps": 3000})
    assert plan.status_code == 201, plan.text
    activated = live_api.call("POST", f"/v1/admin/plans/{plan.json()['version']}/activate", owner)
    assert activated.json()["active"] is True
    pid = unique("lipstick").replace("-", "_")
    created = live_api.call("POST", "/v1/admin/products", owner, json={"id": pid, "name": "口红", "price_fen": 12_000})
    assert created.status_code == 201, created.text

    people = [live_api.login(unique(n)) for n in ("top", "mid", "sharer", "friend")]
    for (sharer_token, _), (friend_token, _) in itertools.pairwise(people):
        code = live_api.call("POST", "/v1/shares", sharer_token, json={"product_id": pid}).json()["code"]
        assert live_api.call("POST", "/v1/referrals/scan", friend_token, json={"code": code}).json() == {
            "status": "bound"
        }
    (top, _), (mid, _), (sharer, _), (friend, _) = people

    listed = live_api.call("GET", "/v1/products?limit=100", friend).json()
    assert any(p["id"] == pid and p["price_fen"] == 12_000 for p in listed["items"])
    order = live_api.call("POST", "/v1/orders", friend, json={"lines": [{"product_id": pid, "qty": 1}]})
    assert order.status_code == 201, order.text
    assert order.json()["amount_fen"] == 12_000
    order_id = order.json()["id"]
    prepay = live_api.call("POST", f"/v1/orders/{order_id}/pay", friend).json()
    assert prepay["package"].startswith("prepay_id=")
    assert prepay["signType"] == "RSA"
    paid = live_api.call("POST", f"/v1/sandbox/orders/{order_id}/pay-success", friend)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"

    eventually(lambda: account(live_api, sharer)["pending_fen"] == 1200)
    assert account(live_api, mid)["pending_fen"] == 600
    assert account(live_api, top)["pending_fen"] == 240
    commissions = live_api.call("GET", "/v1/me/commissions?state=pending", sharer).json()["items"]
    assert commissions[0]["order_id"] == order_id
    assert commissions[0]["level"] == 1

    refund = live_api.call(
        "POST", f"/v1/admin/orders/{order_id}/refunds", owner, json={"amount_fen": 12_000, "reason": "退货"}
    )
    assert refund.status_code == 201, refund.text
    eventually(lambda: account(live_api, sharer)["pending_fen"] == 0)
    assert account(live_api, top)["pending_fen"] == 0
    too_much = live_api.call(
        "POST", f"/v1/admin/orders/{order_id}/refunds", owner, json={"amount_fen": 1, "reason": "x"}
    )
    assert too_much.status_code == 400


def test_the_second_tenant_is_paid_and_refunded_through_its_own_notify_url(live_api: LiveApi) -> None:
    """Production's shape: no default tenant; WeChat's twin POSTs to `/v1/callbacks/wechatpay/<appid>/...`
    of the live server, signed with the second tenant's own merchant keys."""
    other = dataclasses.replace(live_api, tenant=OTHER_TENANT)
    owner = other.admin("owner")
    pid = unique("tea").replace("-", "_")
    created = other.call("POST", "/v1/admin/products", owner, json={"id": pid, "name": "茶", "price_fen": 5_000})
    assert created.status_code == 201, created.text
    buyer, _ = other.login(unique("buyer"))
    order_id = other.call("POST", "/v1/orders", buyer, json={"lines": [{"product_id": pid, "qty": 1}]}).json()["id"]
    assert other.call("POST", f"/v1/orders/{order_id}/pay", buyer).status_code == 200
    paid = other.call("POST", f"/v1/sandbox/orders/{order_id}/pay-success", buyer)
    assert paid.status_code == 200, paid.text
    eventually(lambda: other.call("GET", f"/v1/orders/{order_id}", buyer).json()["status"] == "paid")

    refund = other.call(
        "POST", f"/v1/admin/orders/{order_id}/refunds", owner, json={"amount_fen": 5_000, "reason": "退"}
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["state"] == "requested"
    # WeChat finishes the refund later and POSTs REFUND.SUCCESS to the same tenant's URL
    eventually(
        lambda: get_store().orders.get(OTHER_TENANT, order_id).refunds[0].state.value == "succeeded"  # type: ignore[union-attr]
    )
    # the first tenant's operator sees nothing of it
    first_owner = live_api.admin("owner")
    assert (
        live_api.call(
            "POST", f"/v1/admin/orders/{order_id}/refunds", first_owner, json={"amount_fen": 1, "reason": "x"}
        ).status_code
        == 404
    )
