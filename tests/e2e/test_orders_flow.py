"""End to end over HTTP: order → WeChat Pay notification → commission for three promoters → refund."""

from __future__ import annotations

import itertools

from tests.e2e.conftest import LiveApi, eventually
from tests.stack import unique


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
