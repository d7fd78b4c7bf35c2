"""End to end over HTTP: earn → settle → withdraw → approve → payout run → confirm → paid."""

from __future__ import annotations

from tests.e2e.conftest import LiveApi, eventually
from tests.stack import unique


def account(api: LiveApi, token: str) -> dict[str, int]:
    response = api.call("GET", "/v1/me/account", token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_earn_settle_withdraw_approve_payout_confirm_paid(live_api: LiveApi) -> None:
    owner, finance = live_api.admin("owner"), live_api.admin("finance")
    body = {"rates_bps": [1000, 500, 200], "cap_bps": 3000, "settle_after_days": 0}
    plan = live_api.call("POST", "/v1/admin/plans", owner, json=body)
    assert live_api.call("POST", f"/v1/admin/plans/{plan.json()['version']}/activate", owner).status_code == 200
    rules = live_api.call(
        "PATCH", "/v1/admin/settings/withdrawals", finance, json={"fee_bps": 100, "auto_approve_below_fen": 0}
    )
    assert rules.status_code == 200, rules.text
    pid = unique("serum").replace("-", "_")
    made = live_api.call("POST", "/v1/admin/products", owner, json={"id": pid, "name": "精华", "price_fen": 50_000})
    assert made.status_code == 201, made.text

    (sharer, _), (friend, _) = live_api.login(unique("sharer")), live_api.login(unique("friend"))
    code = live_api.call("POST", "/v1/shares", sharer, json={"product_id": pid}).json()["code"]
    assert live_api.call("POST", "/v1/referrals/scan", friend, json={"code": code}).json()["status"] == "bound"

    # earn: the friend buys and confirms receipt; the settlement run makes the commission available
    order = live_api.call("POST", "/v1/orders", friend, json={"lines": [{"product_id": pid, "qty": 1}]}).json()
    assert live_api.call("POST", f"/v1/sandbox/orders/{order['id']}/pay-success", friend).status_code == 200
    assert live_api.call("POST", f"/v1/orders/{order['id']}/confirm-receipt", friend).status_code == 200
    eventually(lambda: account(live_api, sharer)["frozen_fen"] == 5_000)
    settled = live_api.call("POST", "/v1/admin/jobs/settle/run", owner)
    assert settled.status_code == 200, settled.text
    assert account(live_api, sharer)["available_fen"] == 5_000

    # withdraw: the quote shows the fee first; bad input is refused with nothing written
    quote = live_api.call("GET", "/v1/withdrawals/quote?amount_fen=4000", sharer).json()
    assert (quote["fee_fen"], quote["net_fen"], quote["available_fen"]) == (40, 3_960, 5_000)
    for bad in ({"amount_fen": "4000"}, {"amount_fen": -1}, {"amount_fen": 4000, "extra": 1}, {}):
        refused = live_api.call("POST", "/v1/withdrawals", sharer, json=bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_body", refused.text
    too_much = live_api.call("POST", "/v1/withdrawals", sharer, json={"amount_fen": 6_000})
    assert too_much.status_code == 409 and too_much.json()["error"]["code"] == "insufficient_balance"
    created = live_api.call("POST", "/v1/withdrawals", sharer, json={"amount_fen": 4_000})
    assert created.status_code == 201, created.text
    w = created.json()
    assert (w["state"], w["amount_fen"], w["fee_fen"]) == ("requested", 4_000, 40)
    assert account(live_api, sharer)["withdrawing_fen"] == 4_000
    listed = live_api.call("GET", "/v1/withdrawals", sharer).json()["items"]
    assert [x["id"] for x in listed] == [w["id"]]
    assert live_api.call("GET", f"/v1/withdrawals/{w['id']}", friend).status_code == 404

    # approve, run the payout; the queue worker sends the transfer bill
    queue = live_api.call("GET", "/v1/admin/withdrawals?state=requested&limit=100", finance).json()["items"]
    assert w["id"] in [x["id"] for x in queue]
    assert live_api.call("POST", f"/v1/admin/withdrawals/{w['id']}/approve", sharer).status_code == 403
    approved = live_api.call("POST", f"/v1/admin/withdrawals/{w['id']}/approve", finance)
    assert approved.status_code == 200 and approved.json()["state"] == "approved", approved.text
    run = live_api.call("POST", "/v1/admin/jobs/payout_run/run", owner)
    assert run.status_code == 200, run.text
    eventually(
        lambda: live_api.call("GET", f"/v1/withdrawals/{w['id']}", sharer).json()["state"] == "wait_user_confirm"
    )

    # the mini-program asks for what wx.requestMerchantTransfer needs; the user confirms in WeChat
    confirmation = live_api.call("GET", f"/v1/withdrawals/{w['id']}/confirmation", sharer)
    assert confirmation.status_code == 200, confirmation.text
    assert set(confirmation.json()) == {"package_info", "mch_id", "appid"}
    confirmed = live_api.call("POST", f"/v1/sandbox/withdrawals/{w['id']}/user-confirm", sharer)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "paid"
    assert account(live_api, sharer) == {
        "pending_fen": 0,
        "frozen_fen": 0,
        "available_fen": 1_000,
        "withdrawing_fen": 0,
        "paid_fen": 4_000,
    }

    # the run report, through the admin API
    run_id = live_api.call("GET", f"/v1/admin/withdrawals/{w['id']}", finance).json()["run_id"]
    report = live_api.call("GET", f"/v1/admin/payout-runs/{run_id}", finance).json()
    assert report["by_state"]["paid"]["count"] >= 1
    reconciled = live_api.call("POST", "/v1/admin/jobs/reconcile_payouts/run", owner)
    assert reconciled.status_code == 200, reconciled.text
