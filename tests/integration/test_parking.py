"""Parked stream records on DynamoDB Local: a failing order event is parked with its content, the
order's later events park behind it while other orders go through, and the redrive replays them
in order once the fault is gone. Operators see and redrive their own tenant's records only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib.entities import Principal, Role
from chalicelib.events import orders_stream
from chalicelib.observability import logger
from chalicelib.parking import PARK_AFTER, ParkedRecord, ParkedState, Reason, StreamRef
from chalicelib.services import jobs, orders
from chalicelib.store import get_store
from chalicelib.store.audit import for_entity
from tests import events
from tests.integration.test_api import call
from tests.integration.test_catalog_api import admin_token
from tests.integration.test_orders import PLAN_10_5_2, activate, assert_accounts_match_ledger, chain, pay, product
from tests.stack import OTHER_TENANT, Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def owner(stack: Stack) -> Principal:
    return stack.principal("owner", Role.OWNER)


@pytest.fixture
def patient_runner(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The local runner redelivers a failing record like Lambda (1 + 5 retries), so the app parks it
    before the runner's own dead-letter file would."""
    monkeypatch.setattr(stack.runner, "max_retries", PARK_AFTER + 5)
    return stack


@dataclass
class Fault:
    """The commission engine fails every record of `orders` while on (and logs why)."""

    real: Any
    orders: set[str] = field(default_factory=set)
    on: bool = True

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        def broken(record: Mapping[str, Any]) -> bool:
            key = record["dynamodb"]["Keys"]["pk"]["S"]
            return self.on and key.split("#", 1)[1] in self.orders

        healthy = [r for r in records if not broken(r)]
        failures = list(self.real(healthy)["batchItemFailures"]) if healthy else []
        for record in records:
            if broken(record):
                logger.error("injected ledger fault", extra={"order": record["dynamodb"]["Keys"]["pk"]["S"]})
                failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}


def parked_of(stack: Stack, order_id: str) -> list[ParkedRecord]:
    return get_store().parked.waiting_records(stack.tenant, "orders", f"{stack.tenant}#{order_id}")


def pending(stack: Stack, promoter: Principal) -> int:
    return get_store().ledger.account(stack.tenant, promoter.subject)["pending_fen"]


def test_a_failing_order_event_parks_blocks_only_its_order_and_replays_in_order(
    patient_runner: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = patient_runner
    # Given a 10/5/2 plan, a sharer and a buyer with two placed orders
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    pid = product(stack, 10_000)
    stuck = orders.place(buyer, [(pid, 1)], None, None)
    other = orders.place(buyer, [(pid, 1)], None, None)
    stack.drain()

    # When the commission engine keeps failing on one order while both are paid
    fault = Fault(orders_stream.process_records, {stuck.id})
    monkeypatch.setattr(orders_stream, "process_records", fault)
    pay(stack, buyer, stuck.id)
    pay(stack, buyer, other.id)
    stack.drain()

    # Then the order's first record after the fault is parked with its full content after 5 failed
    # deliveries, the order's later ones (the payment) behind it; the other order earns
    first, *behind = parked_of(stack, stuck.id)
    assert first.reason is Reason.FAILED
    assert first.attempts == PARK_AFTER
    assert first.first_error == first.last_error == "injected ledger fault"
    assert all(p.reason is Reason.BEHIND for p in behind)
    paid = next(p for p in parked_of(stack, stuck.id) if p.action == "order.paid")
    assert paid.record is not None
    assert paid.record["dynamodb"]["NewImage"]["status"]["S"] == "paid"
    assert pending(stack, sharer) == 1000

    # When the stuck order is partly refunded: the refund waits behind the payment, unapplied
    orders.refund(owner, stuck.id, 3000, "one broken")
    orders.refund(owner, other.id, 3000, "one broken")
    stack.drain()
    actions = [p.action for p in parked_of(stack, stuck.id)]
    assert actions.index("order.paid") < actions.index("order.refunded")
    assert pending(stack, sharer) == 700  # the other order's refund went through

    # When the fault is gone and the schedule redrives
    fault.on = False
    summary = jobs.run_for_tenant("redrive_parked", stack.tenant, actor="system:redrive_parked")

    # Then payment then refund are applied, in that order, and kept as replayed history
    assert summary["replayed"] >= 2
    assert parked_of(stack, stuck.id) == []
    assert pending(stack, sharer) == 700 + 700
    history = get_store().parked.page(stack.tenant, ParkedState.REPLAYED, "orders", None, 100)
    mine = [p for p in history.items if p.entity == f"{stack.tenant}#{stuck.id}"]
    replayed = [p.action for p in mine]
    assert replayed.index("order.paid") < replayed.index("order.refunded")
    assert get_store().parked.blocked("orders", {(stack.tenant, f"{stack.tenant}#{stuck.id}")}) == set()

    # And the order's later events flow again, straight through
    orders.refund(owner, stuck.id, 7000, "all returned")
    stack.drain()
    assert parked_of(stack, stuck.id) == []
    assert pending(stack, sharer) == 700
    assert_accounts_match_ledger(stack, [sharer.subject])


def test_a_replay_that_fails_again_stays_parked_with_one_attempt_more(
    patient_runner: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = patient_runner
    activate(owner, PLAN_10_5_2)
    sharer, buyer = chain(stack, 2)
    order = orders.place(buyer, [(product(stack, 5_000), 1)], None, None)
    stack.drain()
    monkeypatch.setattr(orders_stream, "process_records", Fault(orders_stream.process_records, {order.id}))
    pay(stack, buyer, order.id)
    stack.drain()

    jobs.run_for_tenant("redrive_parked", stack.tenant, actor="system:redrive_parked")

    first, *_ = parked_of(stack, order.id)
    assert first.attempts == PARK_AFTER + 1
    assert first.state is ParkedState.PARKED
    assert pending(stack, sharer) == 0


# --- operators ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client(app, project_dir=str(tmp_path_factory.mktemp("no-config"))) as test_client:
        yield test_client


def park_removal(tenant: str) -> StreamRef:
    """Park a users-stream record that replays cleanly (a removal: the users processor ignores it)."""
    uid = f"u-{uuid.uuid4().hex[:10]}"
    sequence = str(uuid.uuid4().int)[:30]
    record = events.user_record(tenant, uid, old={"uid": uid}, sequence=sequence)
    ref = StreamRef(tenant, f"{tenant}#{uid}", sequence)
    assert get_store().parked.park(
        "users", ref, record, reason=Reason.FAILED, attempts=PARK_AFTER, errors=("boom", "boom"), now=_now()
    )
    return ref


def _now() -> Any:
    from chalicelib.clock import utcnow

    return utcnow()


def listed(client: Client, token: str, query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = call(client, "get", f"/v1/admin/parked?limit=2{query}{cursor}", token=token)
        assert status == 200, page
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = f"&cursor={page['next_cursor']}"


def test_operators_see_and_redrive_their_own_tenants_parked_records_only(stack: Stack, client: Client) -> None:
    # Given a parked record in each tenant
    ours, theirs = park_removal(stack.tenant), park_removal(OTHER_TENANT)
    their_owner = admin_token(client, "owner", appid=OTHER_TENANT)
    our_ops, our_owner = admin_token(client, "ops"), admin_token(client, "owner")

    # Then each tenant's operators list their own record and never the other's
    their_list = listed(client, their_owner, "&source=users")
    assert theirs.sequence in {i["sequence"] for i in their_list}
    assert ours.sequence not in {i["sequence"] for i in their_list}
    our_list = listed(client, our_ops)
    assert ours.sequence in {i["sequence"] for i in our_list}
    assert theirs.sequence not in {i["sequence"] for i in our_list}
    row = next(i for i in our_list if i["sequence"] == ours.sequence)
    assert row["source"] == "users"
    assert row["state"] == "parked"
    assert row["last_error"] == "boom"
    assert "record" not in row

    # When the other tenant's owner redrives: only their record is replayed, ours still waits
    status, summary = call(client, "post", "/v1/admin/parked/redrive", {"source": "users"}, token=their_owner)
    assert status == 200, summary
    assert summary["replayed"] >= 1
    assert get_store().parked.waiting_records(OTHER_TENANT, "users", theirs.entity) == []
    assert [p.sequence for p in get_store().parked.waiting_records(stack.tenant, "users", ours.entity)] == [
        ours.sequence
    ]

    # And ops may look but not redrive; our owner redrives ours, audited with the owner as actor
    status, error = call(client, "post", "/v1/admin/parked/redrive", {}, token=our_ops)
    assert status == 403, error
    status, summary = call(client, "post", "/v1/admin/parked/redrive", {}, token=our_owner)
    assert status == 200, summary
    assert get_store().parked.waiting_records(stack.tenant, "users", ours.entity) == []
    replayed = listed(client, our_owner, "&state=replayed&source=users")
    assert ours.sequence in {i["sequence"] for i in replayed}
    audit = [json.loads(r.data) | {"actor": r.actor} for r in for_entity(stack.tenant, "parked:all")]
    assert any(a["actor"] == "admin:owner" and a["replayed"] >= 1 for a in audit)


def test_the_parked_listing_refuses_other_roles_and_bad_filters(client: Client) -> None:
    status, error = call(client, "get", "/v1/admin/parked", token=admin_token(client, "auditor"))
    assert status == 403, error
    status, error = call(client, "get", "/v1/admin/parked?source=ledger", token=admin_token(client, "ops"))
    assert (status, error["error"]["code"]) == (400, "invalid_source")
    status, error = call(client, "post", "/v1/admin/parked/redrive", {"source": 3}, token=admin_token(client))
    assert (status, error["error"]["code"]) == (400, "invalid_source")


def test_the_command_line_lists_parked_records_with_their_content_and_redrives_one_tenant(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools import redrive

    ours, theirs = park_removal(stack.tenant), park_removal(OTHER_TENANT)

    assert redrive.main(["--list", "--tenant", stack.tenant, "--source", "users", "--content"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    row = next(r for r in rows if r["sequence"] == ours.sequence)
    assert row["tenant"] == stack.tenant
    assert row["record"]["dynamodb"]["SequenceNumber"] == ours.sequence
    assert theirs.sequence not in {r["sequence"] for r in rows}

    assert redrive.main(["--tenant", stack.tenant, "--source", "users"]) == 0
    assert json.loads(capsys.readouterr().out)["replayed"] >= 1
    assert get_store().parked.waiting_records(stack.tenant, "users", ours.entity) == []
    assert [p.sequence for p in get_store().parked.waiting_records(OTHER_TENANT, "users", theirs.entity)] == [
        theirs.sequence
    ]
    audit = [r for r in for_entity(stack.tenant, "parked:users") if r.actor.startswith("cli:")]
    assert audit


def test_a_failing_user_event_parks_and_its_replay_counts_the_team_once(
    patient_runner: Stack, owner: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The users stream now writes the report counters (team sizes) in its audit transaction: a
    binding whose record fails until parked is counted once when replayed, and the user's later
    versions (an operator's rebind) go through after it."""
    from chalicelib.events import users_stream
    from chalicelib.services import logins, referrals, shares, team
    from tests.stack import unique

    stack = patient_runner
    head, other_head = (stack.principal(logins.login(f"dev-{unique('h')}", stack.tenant).user.id) for _ in range(2))
    friend = stack.principal(logins.login(f"dev-{unique('f')}", stack.tenant).user.id)
    stack.drain()

    # When the users stream keeps failing on the friend's records while the friend binds
    fault = Fault(users_stream.process_records, {friend.subject})
    monkeypatch.setattr(users_stream, "process_records", fault)
    assert referrals.scan(friend, shares.create(head, None, None).code).status.value == "bound"
    stack.drain()
    waiting = get_store().parked.waiting_records(stack.tenant, "users", f"{stack.tenant}#{friend.subject}")
    assert waiting and waiting[0].reason is Reason.FAILED
    assert team.team_counts(stack.tenant, head.subject)["1"] == 0  # not counted while parked

    # Then the redrive applies it once, and a later rebind of the friend flows straight through
    fault.on = False
    jobs.run_for_tenant("redrive_parked", stack.tenant, actor="system:redrive_parked")
    stack.drain()
    assert team.team_counts(stack.tenant, head.subject)["1"] == 1
    jobs.run_for_tenant("redrive_parked", stack.tenant, actor="system:redrive_parked")  # nothing twice
    assert team.team_counts(stack.tenant, head.subject)["1"] == 1
    referrals.rebind(owner, friend.subject, other_head.subject, "moved by the test")
    stack.drain()
    assert get_store().parked.waiting_records(stack.tenant, "users", f"{stack.tenant}#{friend.subject}") == []
    assert team.team_counts(stack.tenant, head.subject)["1"] == 0
    assert team.team_counts(stack.tenant, other_head.subject)["1"] == 1
