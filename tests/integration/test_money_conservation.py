"""Money is conserved: after any sequence of order events, every promoter's account equals the
sum of their ledger lines per state, and nothing is negative (Hypothesis on DynamoDB Local)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Product, Role
from chalicelib.services import logins, orders, plans, referrals, shares
from chalicelib.store import get_store
from tests.stack import Stack, unique

# An order's life: paid (always), then maybe received, with refunds in between (fractions in
# per mille of what is left); the amount varies so that rounding is exercised.
lives = st.lists(
    st.tuples(
        st.integers(1, 50_000),  # price in fen
        st.booleans(),  # receipt confirmed
        st.lists(st.integers(1, 1000), max_size=3),  # refunds, per mille of what is left
    ),
    min_size=1,
    max_size=5,
)


def _chain(stack: Stack) -> list[Principal]:
    people = [stack.principal(logins.login(f"dev-{unique('m')}", stack.tenant).user.id) for _ in range(4)]
    for sharer, friend in itertools.pairwise(people):
        referrals.scan(friend, shares.create(sharer, None, None).code)
    return people


def _product(stack: Stack, price: int) -> str:
    pid = unique("m").replace("-", "_")
    now = utcnow()
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="system:test", data={})
    get_store().products.create(Product(stack.tenant, pid, pid, price, True, None, now, now), event)
    return pid


def _live(stack: Stack, buyer: Principal, owner: Principal, life: tuple[int, bool, list[int]]) -> None:
    price, received, refunds = life
    order = orders.place(buyer, [(_product(stack, price), 1)], None, None)
    orders.sandbox_pay_success(buyer, order.id)
    if received:
        orders.confirm_receipt(buyer, order.id)
    for per_mille in refunds:
        left = get_store().orders.get(stack.tenant, order.id).refundable_fen  # type: ignore[union-attr]
        amount = max(1, left * per_mille // 1000) if left else 0
        if amount:
            orders.refund(owner, order.id, amount, "test")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(life=lives, self_purchase=st.booleans())
def test_accounts_always_equal_the_sum_of_their_ledger_lines(
    stack: Stack, life: list[Any], self_purchase: bool
) -> None:
    owner = stack.principal("owner", Role.OWNER)
    body = {"rates_bps": [1500, 800, 500], "cap_bps": 2800, "self_purchase": self_purchase}
    plans.activate(owner, plans.create(owner, body)["version"])
    people = _chain(stack)
    buyer = people[-1]
    for one in life:
        _live(stack, buyer, owner, one)
    stack.drain()

    for person in people:
        account = get_store().ledger.account(stack.tenant, person.subject)
        totals: dict[str, int] = defaultdict(int)
        for line in get_store().ledger.all_lines(stack.tenant, person.subject):
            totals[f"{line.state}_fen"] += line.amount_fen
        for bucket in ("pending_fen", "frozen_fen", "available_fen"):
            assert account[bucket] == totals.get(bucket, 0)
            assert account[bucket] >= 0
    # a fully refunded order leaves nothing behind, a partly refunded one its share at most
    paid_total = sum(price for price, _, _ in life)
    earned = sum(get_store().ledger.account(stack.tenant, p.subject)["pending_fen"] for p in people)
    earned += sum(get_store().ledger.account(stack.tenant, p.subject)["frozen_fen"] for p in people)
    assert earned <= paid_total * 2800 // 10_000
