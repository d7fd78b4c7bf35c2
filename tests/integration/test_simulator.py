"""The plan simulator (issue 12 §5) on DynamoDB Local: a draft plan replayed over the last days of
a tenant's paid orders against the active plan. Each test has a tenant of its own, so the replayed
orders are exactly the ones it paid."""

from __future__ import annotations

import gc
import itertools
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, AuditEvent, Principal, Product, Role, Tenant
from chalicelib.errors import InvalidInput, NotAllowed, TooLarge
from chalicelib.services import logins, orders, plans, referrals, shares, simulator
from chalicelib.store import get_store
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration

PLAN = {"rates_bps": [1000, 500, 200], "cap_bps": 2800}
LADDER = {**PLAN, "ladder": [{"min_month_sales_fen": 15_000, "level1_rate_bps": 1500}]}


def _tenant() -> str:
    tenant = unique("wxsim").replace("-", "")
    get_store().tenants.put(Tenant(tenant, "simulator"), utcnow())
    return tenant


def _owner(tenant: str, body: dict[str, Any]) -> Principal:
    owner = Principal(tenant=tenant, subject="owner", role=Role.OWNER)
    plans.activate(owner, plans.create(owner, body)["version"])
    return owner


def _product(tenant: str, price_fen: int) -> str:
    pid = unique("p").replace("-", "_")
    now = utcnow()
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="system:test", data={})
    assert get_store().products.create(Product(tenant, pid, pid, price_fen, True, None, now, now), event)
    return pid


def _chain(tenant: str, depth: int) -> list[Principal]:
    """A shares to B, B to C ...: the last one buys, the three before it are levels 3, 2, 1."""
    people = [Principal(tenant, logins.login(f"dev-{unique('s')}", tenant).user.id, Role.USER) for _ in range(depth)]
    for sharer, friend in itertools.pairwise(people):
        assert referrals.scan(friend, shares.create(sharer, None, None).code).status.value == "bound"
    return people


def _paid(stack: Stack, buyer: Principal, *products: str) -> str:
    order = orders.place(buyer, [(pid, 1) for pid in products], None, None)
    orders.sandbox_pay_success(buyer, order.id)
    return order.id


def _ledger_by_level(tenant: str, order_ids: list[str], promoters: list[Principal]) -> dict[str, int]:
    """What the commission engine really wrote for these orders, per level (refunds included)."""
    totals = {"1": 0, "2": 0, "3": 0}
    for order_id in order_ids:
        for line in get_store().ledger.lines_of_order(tenant, order_id, [p.subject for p in promoters]):
            totals[str(line.level)] += line.amount_fen
    return totals


def test_the_active_plan_as_draft_gives_the_ledgers_commission(stack: Stack) -> None:
    # Given a ladder plan (15 % at level 1 from 15,000 fen of the month), three paid orders that
    # cross the tier on the second, and a partial refund of the third
    tenant = _tenant()
    owner = _owner(tenant, LADDER)
    top, l2, sharer, buyer = _chain(tenant, 4)
    ids = []
    for price in (10_000, 8_000, 6_000):  # one at a time: the engine's batches then run in payment order
        ids.append(_paid(stack, buyer, _product(tenant, price)))
        stack.drain()
        # WeChat's success_time has whole seconds: two payments in one second tie in the replay's
        # payment order, while the engine took them in stream order
        time.sleep(1.05)
    orders.refund(owner, ids[2], 4_000, "returned in part")
    stack.drain()
    ledger = _ledger_by_level(tenant, ids, [top, l2, sharer])
    assert ledger["1"] == 1_000 + 1_200 + 300  # the tier from the second order on; a third left

    # When the active plan is simulated as the draft
    result = simulator.simulate(owner, {"plan": LADDER, "days": 1})

    # Then both sides are the same, and equal to what the ledger holds for those orders
    assert result["orders"] == 3 and result["sales_fen"] == 10_000 + 8_000 + 2_000
    assert result["draft"] == result["active"]
    assert result["draft"]["commission_fen"] == ledger
    assert result["draft"]["total_fen"] == sum(ledger.values())
    assert result["draft"]["cost_bps"] == sum(ledger.values()) * 10_000 // 20_000
    assert result["promoters"] == {"gain": 0, "lose": 0, "same": 3}
    assert result["top_changes"] == [] and result["cap_breaches"] == 0
    assert result["active_version"] is not None and result["days"] == 1


def test_a_higher_level_1_rate_raises_level_1_by_the_expected_amount(stack: Stack) -> None:
    # Given 10/5/2 active and two paid orders
    tenant = _tenant()
    owner = _owner(tenant, PLAN)
    *_, sharer, buyer = _chain(tenant, 4)
    prices = (12_345, 999)
    for price in prices:
        _paid(stack, buyer, _product(tenant, price))
    stack.drain()

    # When a draft pays 12 % at level 1
    result = simulator.simulate(owner, {"plan": {**PLAN, "rates_bps": [1200, 500, 200]}, "days": 7})

    # Then level 1 rises by the rounded-down difference per order; levels 2 and 3 stay
    draft, active = result["draft"]["commission_fen"], result["active"]["commission_fen"]
    assert active == {"1": 1_234 + 99, "2": 617 + 49, "3": 246 + 19}
    assert draft["1"] - active["1"] == (1_481 - 1_234) + (119 - 99)
    assert (draft["2"], draft["3"]) == (active["2"], active["3"])
    assert result["promoters"] == {"gain": 1, "lose": 0, "same": 2}
    names = get_store().users.names(tenant, [sharer.subject])
    assert result["top_changes"] == [
        {"promoter": sharer.subject, "name": names[sharer.subject], "active_fen": 1_333, "draft_fen": 1_600}
    ]
    assert result["draft"]["cost_bps"] > result["active"]["cost_bps"]


def test_cap_breaches_are_counted_even_when_the_cap_leaves_a_level_at_zero(stack: Stack) -> None:
    # Given three paid orders of 1,000 fen under 10/5/2 (cap 28 %)
    tenant = _tenant()
    owner = _owner(tenant, PLAN)
    *_, buyer = _chain(tenant, 4)
    trimmed, filled, plain = (_product(tenant, 1_000) for _ in range(3))
    for pid in (trimmed, filled, plain):
        _paid(stack, buyer, pid)
    stack.drain()

    # When the draft pays fixed amounts at level 1: 800 fen on one product (the cap cuts it to
    # 280), exactly 280 on another (level 1 fills the cap, levels 2 and 3 are cut to nothing)
    draft = {
        **PLAN,
        "overrides": [
            {"product_id": trimmed, "levels": [{"fixed_fen": 800}]},
            {"product_id": filled, "levels": [{"fixed_fen": 280}]},
        ],
    }
    result = simulator.simulate(owner, {"plan": draft, "days": 1})

    # Then both are breaches, the plain order is not, and the active plan has none
    assert result["cap_breaches"] == 2
    assert result["draft"]["commission_fen"] == {"1": 280 + 280 + 100, "2": 50, "3": 20}
    assert result["active"]["commission_fen"] == {"1": 300, "2": 150, "3": 60}


def test_only_the_window_of_local_days_is_replayed(stack: Stack) -> None:
    tenant = _tenant()
    owner = _owner(tenant, PLAN)
    *_, buyer = _chain(tenant, 2)
    _paid(stack, buyer, _product(tenant, 5_000))
    stack.drain()
    later = utcnow() + timedelta(days=2)
    assert simulator.simulate(owner, {"plan": PLAN, "days": 2}, now=later)["orders"] == 0
    assert simulator.simulate(owner, {"plan": PLAN, "days": 3}, now=later)["orders"] == 1


def test_too_many_orders_is_refused_and_the_collector_runs_again(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a tenant with one paid order, and a limit of none
    tenant = _tenant()
    owner = _owner(tenant, PLAN)
    *_, buyer = _chain(tenant, 2)
    _paid(stack, buyer, _product(tenant, 5_000))
    stack.drain()
    monkeypatch.setattr(simulator, "MAX_ORDERS", 0)
    # When the owner simulates
    with pytest.raises(TooLarge) as raised:
        simulator.simulate(owner, {"plan": PLAN, "days": 1})
    # Then the replay stops with a clear error, and the cyclic collector it paused runs again
    assert raised.value.code == "too_many_orders"
    assert gc.isenabled()


def test_without_an_active_plan_the_active_side_is_zero(stack: Stack) -> None:
    tenant = _tenant()
    owner = Principal(tenant=tenant, subject="owner", role=Role.OWNER)
    result = simulator.simulate(owner, {"plan": PLAN})
    assert result["active_version"] is None and result["days"] == simulator.DEFAULT_DAYS
    assert result["active"] == {"commission_fen": {"1": 0, "2": 0, "3": 0}, "total_fen": 0, "cost_bps": 0}


@pytest.mark.parametrize("days", [0, 91, "7", True, None, 1.5])
def test_days_must_be_a_whole_number_from_1_to_90(stack: Stack, days: Any) -> None:
    owner = Principal(tenant=_tenant(), subject="owner", role=Role.OWNER)
    with pytest.raises(InvalidInput) as raised:
        simulator.simulate(owner, {"plan": PLAN, "days": days})
    assert raised.value.code == "invalid_days"


def test_auditors_and_promoters_may_not_simulate(stack: Stack) -> None:
    tenant = _tenant()
    for role in (Role.AUDITOR, Role.USER):
        with pytest.raises(NotAllowed):
            simulator.simulate(Principal(tenant, "someone", role), {"plan": PLAN, "days": 1})


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Client:
    from app import app

    return Client(app, project_dir=str(tmp_path_factory.mktemp("no-config")))


def _token(client: Client, tenant: str, role: Role) -> str:
    username = unique("op").replace("-", "")
    get_store().admins.put(Admin(tenant, username, hash_password("pw-op-123456"), role), utcnow())
    response = client.http.post(
        "/v1/admin/auth/login",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": username, "password": "pw-op-123456", "appid": tenant}),
    )
    assert response.status_code == 200, response.body
    return str(json.loads(response.body)["token"])


def _simulate(client: Client, token: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = client.http.post(
        "/v1/admin/plans/simulate",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        body=json.dumps(body),
    )
    return response.status_code, json.loads(response.body)


def test_operators_of_another_tenant_see_only_their_own_orders(stack: Stack, client: Client) -> None:
    # Given two tenants: one with two paid orders, the other with one
    mine, theirs = _tenant(), _tenant()
    for tenant, prices in ((mine, (3_000, 4_000)), (theirs, (50_000,))):
        _owner(tenant, PLAN)
        *_, buyer = _chain(tenant, 2)
        for price in prices:
            _paid(stack, buyer, _product(tenant, price))
    stack.drain()

    # When an ops operator of each simulates
    status, found = _simulate(client, _token(client, mine, Role.OPS), {"plan": PLAN, "days": 1})
    other_status, other = _simulate(client, _token(client, theirs, Role.FINANCE), {"plan": PLAN, "days": 1})

    # Then each sees its own tenant's orders only
    assert (status, found["orders"], found["sales_fen"]) == (200, 2, 7_000)
    assert (other_status, other["orders"], other["sales_fen"]) == (200, 1, 50_000)
    assert found["draft"]["commission_fen"]["1"] == 300 + 400


def test_a_bad_plan_gets_the_validators_messages(stack: Stack, client: Client) -> None:
    tenant = _tenant()
    token = _token(client, tenant, Role.OWNER)
    bad = {"rates_bps": [2000, 1000, 500, 100], "cap_bps": 2800}
    status, body = _simulate(client, token, {"plan": bad, "days": 1})
    saved = client.http.post(
        "/v1/admin/plans",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        body=json.dumps(bad),
    )
    assert (status, body["error"]["code"]) == (400, "invalid_plan")
    assert body == json.loads(saved.body) and saved.status_code == 400
    assert "never a fourth" in " ".join(body["error"]["details"])
    for wrong in ({"days": 1}, {"plan": [1, 2], "days": 1}, {"plan": {"cap_bps": 100}, "days": 1}):
        assert _simulate(client, token, wrong)[1]["error"]["code"] == "invalid_plan"
    assert _simulate(client, token, {"plan": PLAN, "days": 0}) == (
        400,
        {"error": {"code": "invalid_days", "message": "days is a whole number from 1 to 90"}},
    )
    auditor = _token(client, tenant, Role.AUDITOR)
    assert _simulate(client, auditor, {"plan": PLAN, "days": 1})[0] == 403


def test_a_self_purchase_draft_pays_the_buying_promoter(stack: Stack) -> None:
    # Given one 10,000 fen order of a promoter bound to a sharer, under 10/5/2
    tenant = _tenant()
    owner = _owner(tenant, PLAN)
    sharer, buyer = _chain(tenant, 2)
    _paid(stack, buyer, _product(tenant, 10_000))
    stack.drain()

    # When the draft pays self-purchase: the buyer is level 1, the sharer level 2
    result = simulator.simulate(owner, {"plan": {**PLAN, "self_purchase": True}, "days": 1})

    # Then the buyer gains 1,000 fen and the sharer drops from 1,000 to 500
    assert result["draft"]["commission_fen"] == {"1": 1_000, "2": 500, "3": 0}
    assert {(c["promoter"], c["active_fen"], c["draft_fen"]) for c in result["top_changes"]} == {
        (buyer.subject, 0, 1_000),
        (sharer.subject, 1_000, 500),
    }
    assert result["promoters"] == {"gain": 1, "lose": 1, "same": 0}
