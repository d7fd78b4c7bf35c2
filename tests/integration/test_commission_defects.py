"""Regression tests of the commission engine's money defects (issue 9, sections 2 and 3), each
reproduced on DynamoDB Local through the real order service and stream records."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.clock import iso, utcnow
from chalicelib.entities import Principal, Role
from chalicelib.services import commissions, orders, settlements
from chalicelib.store import get_store
from tests.integration.test_orders import (
    PLAN_10_5_2,
    activate,
    assert_accounts_match_ledger,
    chain,
    pay,
    product,
)
from tests.stack import Stack

pytestmark = pytest.mark.integration

LADDER = {**PLAN_10_5_2, "ladder": [{"min_month_sales_fen": 100_000, "level1_rate_bps": 1500}]}


@pytest.fixture
def owner(stack: Stack) -> Principal:
    return stack.principal("owner", Role.OWNER)


def account(stack: Stack, who: Principal) -> dict[str, int]:
    return get_store().ledger.account(stack.tenant, who.subject)


def line_sum(stack: Stack, who: Principal, order_id: str) -> int:
    return sum(line.amount_fen for line in get_store().ledger.lines_of_order(stack.tenant, order_id, [who.subject]))


def records_of(stack: Stack, order_ids: str | set[str], *actions: str) -> list[dict[str, Any]]:
    """The stream records of some orders' versions with one of `actions` (all when none), in order."""
    ids = {order_ids} if isinstance(order_ids, str) else order_ids
    found = []
    for record in stack.stream_records("orders"):
        event = commissions.parse_event(record)
        if event is not None and event.order.id in ids and (not actions or event.action in actions):
            found.append(record)
    return found


def test_a_full_refund_split_around_receipt_nets_to_zero_at_every_level(stack: Stack, owner: Principal) -> None:
    # Given commission on receipt (10/5/2) and a 12,000 fen order
    activate(owner, {**PLAN_10_5_2, "trigger": "received"})
    top, l2, sharer, buyer = chain(stack, 4)
    order = orders.place(buyer, [(product(stack, 12_000), 1)], None, None)
    pay(stack, buyer, order.id)
    stack.drain()

    # When half is refunded before receipt, then receipt, then the other half
    orders.refund(owner, order.id, 6_000, "half before receipt")
    stack.drain()
    orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert [account(stack, p)["frozen_fen"] for p in (sharer, l2, top)] == [600, 300, 120]
    orders.refund(owner, order.id, 6_000, "the rest after receipt")
    stack.drain()

    # Then nothing is left at any level (today: 300 / 150 / 60)
    for promoter in (sharer, l2, top):
        assert line_sum(stack, promoter, order.id) == 0
        assert account(stack, promoter)["frozen_fen"] == 0
    assert_accounts_match_ledger(stack, [p.subject for p in (sharer, l2, top)])


def test_refunded_sales_never_count_towards_a_ladder_tier(stack: Stack, owner: Principal) -> None:
    # Given a ladder: 15 % at level 1 from 100,000 fen of the month's sales
    activate(owner, LADDER)
    sharer, buyer = chain(stack, 2)
    big = orders.place(buyer, [(product(stack, 95_000), 1)], None, None)
    pay(stack, buyer, big.id)
    stack.drain()
    assert account(stack, sharer)["pending_fen"] == 9_500

    # When that order is refunded in full, then a 10,000 fen order is paid
    orders.refund(owner, big.id, 95_000, "returned")
    stack.drain()
    assert account(stack, sharer)["pending_fen"] == 0
    small = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, small.id)
    stack.drain()

    # Then it pays the base rate: the month's sales are 10,000 fen, not 105,000
    assert line_sum(stack, sharer, small.id) == 1_000
    month = utcnow().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    counters = get_store().ledger.counters(stack.tenant, [(f"l1sales#{sharer.subject}", month)])
    assert counters[(f"l1sales#{sharer.subject}", month)] == 10_000


def test_a_replayed_batch_does_not_count_an_order_twice_on_the_ladder(stack: Stack, owner: Principal) -> None:
    # Given a ladder from 15,000 fen and a 6,000 fen order already written
    activate(owner, {**PLAN_10_5_2, "ladder": [{"min_month_sales_fen": 15_000, "level1_rate_bps": 1500}]})
    sharer, buyer = chain(stack, 2)
    first = orders.place(buyer, [(product(stack, 6_000), 1)], None, None)
    pay(stack, buyer, first.id)
    stack.drain()
    assert line_sum(stack, sharer, first.id) == 600

    # When a batch holding that order again and a new 5,000 fen order is delivered
    second = orders.place(buyer, [(product(stack, 5_000), 1)], None, None)
    pay(stack, buyer, second.id)
    batch = records_of(stack, first.id, "order.paid") + records_of(stack, second.id)
    assert len(batch) >= 3  # the first order's payment, all the second's versions up to its payment
    assert commissions.process_stream_batch(batch) == {"batchItemFailures": []}

    # Then the month's sales are 11,000 fen (below the tier), not 17,000
    assert line_sum(stack, sharer, second.id) == 500
    assert line_sum(stack, sharer, first.id) == 600
    stack.drain()
    assert_accounts_match_ledger(stack, [sharer.subject])


def test_a_refund_racing_the_settle_job_never_leaves_reversed_commission_available(
    stack: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a received order whose 1,000 fen commission is due
    activate(owner, {**PLAN_10_5_2, "settle_after_days": 7})
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    orders.confirm_receipt(buyer, order.id)
    stack.drain()
    assert account(stack, sharer)["frozen_fen"] == 1_000

    # When the settle job moves the line right after the refund's engine read it as frozen
    store_type = type(get_store().ledger)
    read = store_type.lines_of_order
    raced = threading.Event()

    def read_then_settle(self: Any, tenant: str, order_id: str, promoters: Any) -> Any:
        lines = read(self, tenant, order_id, promoters)
        if order_id == order.id and not raced.is_set():
            raced.set()
            settlements.settle(utcnow() + timedelta(days=8))
        return lines

    monkeypatch.setattr(store_type, "lines_of_order", read_then_settle)
    orders.refund(owner, order.id, 10_000, "returned")
    stack.drain()
    assert raced.is_set()

    # Then the reversal is a clawback from available: nothing frozen below zero, nothing to withdraw
    assert account(stack, sharer)["available_fen"] == 0
    assert account(stack, sharer)["frozen_fen"] == 0
    assert line_sum(stack, sharer, order.id) == 0
    assert_accounts_match_ledger(stack, [sharer.subject])


def test_commission_does_not_depend_on_the_order_audit_write(
    stack: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.store.audit import AuditStore, PredecessorMissing

    # Given an order whose earlier version's audit record is lost (the chain cannot continue)
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)

    def lost(*_: Any, **__: Any) -> bool:
        raise PredecessorMissing(f"order:{order.id} v1")

    monkeypatch.setattr(AuditStore, "append_version", lost)

    # When the stream delivers its payment, then its refund
    assert commissions.process_stream_batch(records_of(stack, order.id, "order.paid")) == {"batchItemFailures": []}
    orders.refund(owner, order.id, 4_000, "part returned")
    refund = records_of(stack, order.id, "order.refunded")
    assert commissions.process_stream_batch(refund) == {"batchItemFailures": []}

    # Then commission is written and reversed all the same
    assert account(stack, sharer)["pending_fen"] == 600
    assert_accounts_match_ledger(stack, [sharer.subject])


def _inject_conflicts(monkeypatch: pytest.MonkeyPatch, workers: set[int]) -> list[int]:
    """Make two of every three transactions of the worker threads end in TransactionConflict.

    DynamoDB Local serialises transactions, so it never reports the conflicts the service
    reports for concurrent transactions on one item (a hot promoter's account); they are
    injected here the way the service reports them: cancelled, nothing written.
    """
    from chalicelib.store.base import Transactions, TxOutcome

    attempts: dict[int, int] = defaultdict(int)
    injected: list[int] = []
    run = Transactions.run

    def sometimes_conflicting(self: Any, body: Callable[..., None]) -> Any:
        me = threading.get_ident()
        if me in workers:
            attempts[me] += 1
            if attempts[me] % 3:
                injected.append(1)
                return TxOutcome(committed=False, conflict=True)
        return run(self, body)

    monkeypatch.setattr(Transactions, "run", sometimes_conflicting)
    return injected


@pytest.fixture
def runner_held(stack: Stack) -> Iterator[None]:
    """The test feeds the stream itself: a background runner in the same process (the e2e
    stack's) must not apply the records first."""
    with stack.runner.paused():
        yield


def test_a_hot_promoter_under_four_parallel_batch_workers_loses_nothing(
    stack: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch, runner_held: None
) -> None:
    # Given 48 paid orders, all earning for one hot promoter, in 12 batches of 4 orders
    activate(owner, PLAN_10_5_2)
    top, sharer = chain(stack, 2)
    buyers = [chain(stack, 1)[0] for _ in range(4)]
    from chalicelib.services import referrals, shares

    code = shares.create(sharer, None, None).code
    for b in buyers:
        referrals.scan(b, code)
    pid = product(stack, 1_000)
    ids = set()
    for i in range(48):
        placed = orders.place(buyers[i % 4], [(pid, 1)], None, None)
        pay(stack, buyers[i % 4], placed.id)
        ids.add(placed.id)
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records_of(stack, ids):  # every version of each order, up to its payment
        by_order[str(record["dynamodb"]["Keys"]["pk"]["S"])].append(record)
    assert len(by_order) == 48
    orders_in_turn = list(by_order.values())
    batches = [[r for one in orders_in_turn[i : i + 4] for r in one] for i in range(0, 48, 4)]
    workers: set[int] = set()
    injected = _inject_conflicts(monkeypatch, workers)

    # When four workers apply them at the same time (Lambda's ParallelizationFactor 4), their
    # transactions on the hot account conflicting
    start = threading.Barrier(4)

    def worker(mine: list[list[dict[str, Any]]]) -> list[Any]:
        workers.add(threading.get_ident())
        start.wait()
        return [commissions.process_stream_batch(batch)["batchItemFailures"] for batch in mine]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(worker, [batches[w::4] for w in range(4)]))

    # Then nothing failed, and the account equals the sum of the lines
    assert injected
    assert [f for worker_failures in outcomes for f in worker_failures if f] == []
    assert account(stack, sharer)["pending_fen"] == 48 * 100
    assert account(stack, top)["pending_fen"] == 48 * 50
    assert_accounts_match_ledger(stack, [sharer.subject, top.subject])


def _failed_refund_record(refund_record: dict[str, Any], amount_fen: int, refunded_before: int) -> dict[str, Any]:
    """The next version of an order after `refund_record`: WeChat reported the refund failed."""
    record: dict[str, Any] = json.loads(json.dumps(refund_record))
    new = record["dynamodb"]["NewImage"]
    data = json.loads(new["event_data"]["S"])
    record["dynamodb"]["OldImage"] = json.loads(json.dumps(new))
    version = int(new["version"]["N"]) + 1
    new["version"] = {"N": str(version)}
    new["prev_event_at"] = new["event_at"]
    new["event_at"] = {"S": iso(utcnow() + timedelta(seconds=1))}
    new["event_action"] = {"S": "order.refund_failed"}
    new["event_actor"] = {"S": "system:wechatpay"}
    failed = {"refund_id": data["refund_id"], "amount_fen": amount_fen, "refunded_before_fen": refunded_before}
    new["event_data"] = {"S": json.dumps(failed)}
    new["refunded_fen"] = {"N": str(refunded_before - amount_fen)}
    record["dynamodb"]["SequenceNumber"] = str(int(record["dynamodb"]["SequenceNumber"]) + 1)
    return record


@pytest.mark.parametrize("settled_meanwhile", [False, True])
def test_a_refund_that_fails_at_wechat_undoes_its_reversal(
    stack: Stack, owner: Principal, settled_meanwhile: bool
) -> None:
    # Given a received order, 30 % refunded: 700 fen left at level 1, 350 at level 2
    activate(owner, {**LADDER, "settle_after_days": 7})
    top, sharer, buyer = chain(stack, 3)
    order = orders.place(buyer, [(product(stack, 10_000), 1)], None, None)
    pay(stack, buyer, order.id)
    orders.confirm_receipt(buyer, order.id)
    orders.refund(owner, order.id, 3_000, "part returned")
    stack.drain()
    assert [line_sum(stack, p, order.id) for p in (sharer, top)] == [700, 350]
    if settled_meanwhile:
        settlements.settle(utcnow() + timedelta(days=8))
    bucket = "available_fen" if settled_meanwhile else "frozen_fen"

    # When WeChat reports that refund failed (delivered twice)
    (refunded,) = records_of(stack, order.id, "order.refunded")
    failed = _failed_refund_record(refunded, 3_000, 3_000)
    for _ in range(2):
        assert commissions.process_stream_batch([failed]) == {"batchItemFailures": []}

    # Then each reversal is undone by one line, in the bucket the original line is in now
    for promoter, full in ((sharer, 1_000), (top, 500)):
        lines = get_store().ledger.lines_of_order(stack.tenant, order.id, [promoter.subject])
        undo = [line for line in lines if line.event.endswith("-undo")]
        reversal = [line for line in lines if line.event.startswith("refund-") and line not in undo]
        assert len(undo) == 1
        assert undo[0].amount_fen == -reversal[0].amount_fen
        assert undo[0].state == bucket.removesuffix("_fen")
        assert line_sum(stack, promoter, order.id) == full
        assert account(stack, promoter)[bucket] == full
    # and the sales count again
    month = utcnow().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    counters = get_store().ledger.counters(stack.tenant, [(f"l1sales#{sharer.subject}", month)])
    assert counters[(f"l1sales#{sharer.subject}", month)] == 10_000
    assert_accounts_match_ledger(stack, [sharer.subject, top.subject])
