"""Orders and the commission engine on DynamoDB Local: pay, receive, refund, replays, money kept."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import pytest

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Product, Role
from chalicelib.services import accounts, commissions, logins, orders, plans, referrals, refunds, shares
from chalicelib.store import get_store
from chalicelib.wechat import get_pay
from chalicelib.wechat.pay.sandbox import SandboxWeChatPay
from tests.stack import Stack, unique

PLAN_10_5_2 = {"rates_bps": [1000, 500, 200], "cap_bps": 3000}


@pytest.fixture
def owner(stack: Stack) -> Principal:
    return stack.principal("owner", Role.OWNER)


def activate(owner: Principal, body: dict[str, Any]) -> int:
    created = plans.create(owner, body)
    return int(plans.activate(owner, created["version"])["version"])


def product(stack: Stack, price_fen: int) -> str:
    pid = unique("p").replace("-", "_")
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="admin:owner", data={})
    now = utcnow()
    assert get_store().products.create(
        Product(stack.tenant, pid, f"商品 {pid}", price_fen, created_at=now, updated_at=now), event
    )
    return pid


def chain(stack: Stack, depth: int) -> list[Principal]:
    """A shares to B, B to C ... : the last one's upline is the ones before, nearest first."""
    people = [stack.principal(logins.login(f"dev-{unique('u')}", stack.tenant).user.id) for _ in range(depth)]
    for sharer, friend in itertools.pairwise(people):
        code = shares.create(sharer, None, None).code
        assert referrals.scan(friend, code).status.value == "bound"
    return people


def pay(stack: Stack, buyer: Principal, order_id: str) -> None:
    orders.sandbox_pay_success(buyer, order_id)


def ledger_totals(stack: Stack, promoter: str) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for line in get_store().ledger.all_lines(stack.tenant, promoter):
        totals[f"{line.state}_fen"] += line.amount_fen
    return totals


def assert_accounts_match_ledger(stack: Stack, promoters: list[str]) -> None:
    for promoter in promoters:
        account = get_store().ledger.account(stack.tenant, promoter)
        totals = ledger_totals(stack, promoter)
        for bucket in ("pending_fen", "frozen_fen", "available_fen"):
            assert account[bucket] == totals.get(bucket, 0), (promoter, bucket, account, dict(totals))


def test_beauty_product_order_pays_three_levels_then_receipt_freezes_and_refund_reverses(
    stack: Stack, owner: Principal
) -> None:
    # Given a 10/5/2 plan and a chain top -> l2 -> sharer -> buyer
    activate(owner, PLAN_10_5_2)
    top, l2, sharer, buyer = chain(stack, 4)
    lipstick = product(stack, 10_000)
    code = shares.create(sharer, lipstick, "wechat").code

    # When the buyer orders through the share and pays
    order = orders.place(buyer, [(lipstick, 1)], code, None)
    assert order.snapshot.upline == (sharer.subject, l2.subject, top.subject)
    pay(stack, buyer, order.id)
    stack.drain()

    # Then three promoters see pending commission on the amount paid
    expected = {sharer.subject: 1000, l2.subject: 500, top.subject: 200}
    for promoter, amount in expected.items():
        assert get_store().ledger.account(stack.tenant, promoter)["pending_fen"] == amount
    view = accounts.my_commissions(sharer, None, None, 20)
    assert view["items"][0]["amount_fen"] == 1000
    assert view["items"][0]["trace"] == "base 10000 fen, rate 10%"
    assert view["items"][0]["buyer"].endswith("**")

    # When the buyer confirms receipt: pending becomes frozen
    orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 1000
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 0

    # When 30 % is refunded, then the whole rest: commission is reversed to exactly zero
    orders.refund(owner, order.id, 3000, "one broken")
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 700
    assert get_store().ledger.account(stack.tenant, top.subject)["frozen_fen"] == 140
    orders.refund(owner, order.id, 7000, "all returned")
    stack.drain()
    for promoter in expected:
        assert get_store().ledger.account(stack.tenant, promoter)["frozen_fen"] == 0
    assert_accounts_match_ledger(stack, list(expected))


def test_payment_notifications_delivered_three_times_pay_once(stack: Stack, owner: Principal) -> None:
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 5_000), 2)], None, None)
    client = get_pay(stack.tenant)
    assert isinstance(client, SandboxWeChatPay), "the tests pay through the sandbox twin"
    user = get_store().users.get(stack.tenant, buyer.subject)
    assert user is not None
    headers, body = client.notification_for(order.id, order.amount_fen, user.openid)
    for _ in range(3):
        assert orders.payment_notification(stack.tenant, headers, body) == {"code": "SUCCESS"}
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 1000
    assert len(get_store().ledger.all_lines(stack.tenant, sharer.subject)) == 1


def test_a_payment_of_another_amount_is_refused(stack: Stack, owner: Principal) -> None:
    from chalicelib.errors import StateConflict

    activate(owner, PLAN_10_5_2)
    (buyer,) = chain(stack, 1)
    order = orders.place(buyer, [(product(stack, 5_000), 1)], None, None)
    client = get_pay(stack.tenant)
    assert isinstance(client, SandboxWeChatPay), "the tests pay through the sandbox twin"
    headers, body = client.notification_for(order.id, 1, "someone")
    with pytest.raises(StateConflict):
        orders.payment_notification(stack.tenant, headers, body)
    assert get_store().orders.get(stack.tenant, order.id).status.value == "created"  # type: ignore[union-attr]


def test_the_same_stream_batch_twice_changes_nothing(stack: Stack, owner: Principal) -> None:
    activate(owner, PLAN_10_5_2)
    top, sharer, buyer = chain(stack, 3)
    pid = product(stack, 3_333)
    stack.drain()
    placed = [orders.place(buyer, [(pid, 1)], None, None) for _ in range(3)]
    for order in placed:
        pay(stack, buyer, order.id)
    records = _order_records(stack)
    first = commissions.process_stream_batch(records)
    second = commissions.process_stream_batch(records)
    assert first == second == {"batchItemFailures": []}
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 3 * 333
    assert get_store().ledger.account(stack.tenant, top.subject)["pending_fen"] == 3 * 166
    assert_accounts_match_ledger(stack, [sharer.subject, top.subject])
    stack.drain()  # the runner delivers the same records again: still nothing changes
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 3 * 333


def test_a_poison_record_fails_alone(stack: Stack, owner: Principal) -> None:
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    stack.drain()
    order = orders.place(buyer, [(product(stack, 1_000), 1)], None, None)
    pay(stack, buyer, order.id)
    records = _order_records(stack)
    poison = json.loads(json.dumps(records[-1]))
    poison["dynamodb"]["SequenceNumber"] = "999"
    poison["dynamodb"]["NewImage"]["lines"] = {"S": "not json"}
    result = commissions.process_stream_batch([poison, *records])
    assert result == {"batchItemFailures": [{"itemIdentifier": "999"}]}
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 100


def _order_records(stack: Stack) -> list[dict[str, Any]]:
    """The orders stream's latest records as Lambda would deliver them."""
    return stack.stream_records("orders")[-60:]


def test_cancel_before_payment_creates_nothing(stack: Stack, owner: Principal) -> None:
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 1_000), 1)], None, None)
    orders.cancel(buyer, order.id)
    stack.drain()
    assert get_store().ledger.all_lines(stack.tenant, sharer.subject) == []
    from chalicelib.errors import StateConflict

    with pytest.raises(StateConflict):
        orders.pay(buyer, order.id)


def test_an_order_without_an_active_plan_earns_nothing_and_plans_are_validated(stack: Stack, owner: Principal) -> None:
    from chalicelib.errors import InvalidInput

    with pytest.raises(InvalidInput) as fee:
        plans.create(owner, {**PLAN_10_5_2, "joining_fee": 9900})
    assert fee.value.code == "forbidden_fee"
    with pytest.raises(InvalidInput) as four:
        plans.create(owner, {"rates_bps": [100, 100, 100, 100], "cap_bps": 3000})
    assert four.value.code == "invalid_plan"
    listed = plans.listing(owner, None, 50)
    assert all(p["version"] >= 1 for p in listed["items"])
    assert sum(p["active"] for p in listed["items"]) <= 1
    assert utcnow()


def test_auto_receipt_receives_only_orders_paid_long_enough_ago_and_once(stack: Stack, owner: Principal) -> None:
    from datetime import timedelta

    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 2_000), 1)], None, None)
    pay(stack, buyer, order.id)
    recent = orders.place(buyer, [(product(stack, 2_000), 1)], None, None)
    pay(stack, buyer, recent.id)
    stack.drain()

    later = utcnow() + timedelta(days=10, seconds=1)
    summary = orders.auto_receipt(later, days=10)
    assert summary["received"] >= 2  # both are older than 10 days at `later`
    assert orders.auto_receipt(later, days=10)["received"] == 0  # a second run receives nothing
    assert orders.auto_receipt(utcnow(), days=10)["received"] == 0
    stack.drain()
    assert get_store().orders.get(stack.tenant, order.id).status.value == "received"  # type: ignore[union-attr]
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 400


def test_a_share_with_a_coupon_friend_claims_and_orders_in_one_step(stack: Stack, owner: Principal) -> None:
    from datetime import timedelta

    from chalicelib.errors import StateConflict
    from chalicelib.services import catalog

    # Given a "spend 100, save 20" coupon and a 120-yuan lipstick shared with it
    activate(owner, PLAN_10_5_2)
    top, l2, sharer, friend = chain(stack, 4)
    lipstick = product(stack, 12_000)
    now = utcnow()
    coupon = catalog.create_coupon(
        owner, coupon_id=None, name="满100减20", threshold_fen=10_000, amount_fen=2_000,
        valid_from=now - timedelta(hours=1), valid_until=now + timedelta(days=7),
    )  # fmt: skip
    share = shares.create(sharer, lipstick, "moments", coupon.coupon_id)
    assert share.coupon_id == coupon.coupon_id

    # When the friend claims it and orders with it
    catalog.claim(friend, coupon.coupon_id)
    order = orders.place(friend, [(lipstick, 1)], share.code, coupon.coupon_id)
    assert (order.list_fen, order.discount_fen, order.amount_fen) == (12_000, 2_000, 10_000)
    pay(stack, friend, order.id)
    stack.drain()

    # Then commission is on the 100 yuan actually paid, and the coupon is used up
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 1000
    assert get_store().ledger.account(stack.tenant, l2.subject)["pending_fen"] == 500
    assert get_store().ledger.account(stack.tenant, top.subject)["pending_fen"] == 200
    with pytest.raises(StateConflict):
        orders.place(friend, [(lipstick, 1)], share.code, coupon.coupon_id)


@pytest.mark.parametrize(("policy", "expected_top"), [("skip", 200), ("compress", 500)])
def test_an_upline_who_is_not_an_active_promoter(
    stack: Stack, owner: Principal, policy: str, expected_top: int
) -> None:
    from chalicelib.store.models import UserModel

    activate(owner, {**PLAN_10_5_2, "inactive_upline": policy})
    top, l2, sharer, buyer = chain(stack, 4)
    UserModel(f"{stack.tenant}#{l2.subject}").update(actions=[UserModel.promoter.set(False)])
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["pending_fen"] == 1000
    assert get_store().ledger.account(stack.tenant, l2.subject)["pending_fen"] == 0
    assert get_store().ledger.account(stack.tenant, top.subject)["pending_fen"] == expected_top


def test_settlement_makes_due_commission_available_once_and_a_later_refund_claws_back(
    stack: Stack, owner: Principal
) -> None:
    from datetime import timedelta

    from chalicelib.services import settlements

    activate(owner, {**PLAN_10_5_2, "settle_after_days": 7})
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 1000

    settlements.settle(utcnow() + timedelta(days=6))  # not due yet for this order (others may be)
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 1000
    later = utcnow() + timedelta(days=7, minutes=1)
    settlements.settle(later)
    assert get_store().ledger.account(stack.tenant, sharer.subject)["available_fen"] == 1000
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 0
    assert settlements.settle(later)["lines"] == 0  # a second run settles nothing twice

    orders.refund(owner, order.id, 5_000, "half returned")  # after settlement: a clawback
    stack.drain()
    account = get_store().ledger.account(stack.tenant, sharer.subject)
    assert account["available_fen"] == 500
    assert_accounts_match_ledger(stack, [sharer.subject])


def test_commission_on_receipt_counts_refunds_made_before_it(stack: Stack, owner: Principal) -> None:
    activate(owner, {**PLAN_10_5_2, "trigger": "received"})
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    stack.drain()
    assert get_store().ledger.all_lines(stack.tenant, sharer.subject) == []  # nothing until receipt
    orders.refund(owner, order.id, 4_000, "part returned before receipt")
    orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert get_store().ledger.account(stack.tenant, sharer.subject)["frozen_fen"] == 600
    assert_accounts_match_ledger(stack, [sharer.subject])


def test_a_buyers_order_list_shows_each_orders_state_now_newest_first_and_pages(stack: Stack, owner: Principal) -> None:
    # Given three orders of one buyer, the second paid and then refunded in part
    activate(owner, PLAN_10_5_2)
    (buyer,) = chain(stack, 1)
    pid = product(stack, 3_000)
    placed = [orders.place(buyer, [(pid, n)], None, None).id for n in (1, 2, 3)]
    pay(stack, buyer, placed[1])
    refunds.request(owner, placed[1], 1_000, "damaged", None)
    # When the buyer lists their orders two at a time
    first = orders.my_orders(buyer, None, 2)
    second = orders.my_orders(buyer, first["next_cursor"], 2)
    # Then newest first, with the state each order is in now (not as it was placed)
    rows = first["items"] + second["items"]
    assert [r["id"] for r in rows] == placed[::-1]
    by_id = {r["id"]: r for r in rows}
    assert by_id[placed[1]]["status"] == "paid" and by_id[placed[1]]["refunded_fen"] == 1_000
    assert by_id[placed[0]]["status"] == "created" and by_id[placed[2]]["amount_fen"] == 9_000
    # and another buyer sees none of them
    (other,) = chain(stack, 1)
    assert orders.my_orders(other, None, 20)["items"] == []
