"""The whole money lifecycle as a Hypothesis state machine, on DynamoDB Local (issue 9, "Tests").

Through the real services, the WeChat Pay and transfer twins and the local event runner:
bind (share + scan), place, prepay and pay (the twin POSTs its notification to the notify URL;
some notifications delivered again, some lost and recovered by reconciliation), cancel, receipt,
partial and full refunds (some failing at WeChat, some double-submitted), settle runs,
withdrawals, payout runs, user confirmations, stream delivery; with faults: transaction conflicts
on the ledger, batches delivered twice or out of order (direct replays, and the runner's
checkpoints rewound), an order whose records keep failing until they are parked, then redriven.

After every step, for the example's promoters and orders:
- ledger total = pending + frozen + available + withdrawing + paid, per state as in
  `tests.integration.test_withdrawals.assert_money_conserved`;
- no line above level 3; an order's lines never exceed the plan's cap nor the paid amount;
- a settle run past the return windows leaves nothing of the example frozen;
- once the streams are drained, each level of each order sums to its commission on the whole
  paid amount (`commission.compute`) x net paid / paid, rounded down: zero after a full refund,
  zero before receipt when the plan pays on receipt, nothing for a cancelled order; every
  refund ends as WeChat said (failed ones undone); the ladder's sales counters equal a recount
  of the net paid amounts (refunded sales do not count, replays count nothing twice);
- each withdrawal is paid at most once (one transfer bill, paid only if the withdrawal is paid;
  paid_fen and withdrawing_fen match the withdrawals' states);
- nothing is parked forever (at the end of each example, after a redrive, nothing waits) and the
  runner's own dead-letter file never grows.
"""

from __future__ import annotations

import copy
import random
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chalicelib import commission
from chalicelib.clock import utcnow
from chalicelib.commission import Attribution, OrderLine, Trigger
from chalicelib.entities import Principal, Role
from chalicelib.errors import StateConflict
from chalicelib.events import orders_stream
from chalicelib.ledger import BUCKETS, LedgerLine
from chalicelib.observability import logger
from chalicelib.orders import Order, OrderStatus, RefundState
from chalicelib.parking import SOURCES
from chalicelib.services import (
    commissions,
    jobs,
    logins,
    orders,
    plans,
    referrals,
    refunds,
    shares,
    withdrawals,
)
from chalicelib.store import get_store
from chalicelib.store.base import TxOutcome
from chalicelib.withdrawal import FINAL, WithdrawalState
from tests.integration.test_orders import activate, chain, product
from tests.integration.test_withdrawals import assert_money_conserved
from tests.stack import OPEN_RULES, Stack, unique

pytestmark = pytest.mark.integration

MAX_USERS = 7
MAX_ORDERS = 7
STREAM_HANDLERS = ("on_order_change", "on_user_change")
SETTLE_AHEAD = timedelta(days=40)  # past any return window of the plans drawn here (7 days)


# --- faults and taps ---------------------------------------------------------------------------


class Tap:
    """Wraps the orders stream's processor: keeps the records the engine applied (for replays)
    and fails every record of the orders in `broken` (logged, as a real failure is), so they
    are parked after repeated deliveries."""

    def __init__(self, real: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]]) -> None:
        self.real = real
        self.applied: dict[str, dict[str, Any]] = {}  # by sequence number
        self.broken: set[str] = set()

    @staticmethod
    def order_of(record: Mapping[str, Any]) -> str:
        return str(record["dynamodb"]["Keys"]["pk"]["S"]).split("#", 1)[1]

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        healthy = [r for r in records if self.order_of(r) not in self.broken]
        failures = list(self.real(healthy).get("batchItemFailures") or []) if healthy else []
        failed = {str(f.get("itemIdentifier")) for f in failures}
        self.applied.update({_sequence(r): copy.deepcopy(dict(r)) for r in healthy if _sequence(r) not in failed})
        for record in records:
            if self.order_of(record) in self.broken:
                logger.error("injected commission fault", extra={"order": self.order_of(record)})
                failures.append({"itemIdentifier": _sequence(record)})
        return {"batchItemFailures": failures}


def _sequence(record: Mapping[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class Conflicts:
    """The ledger's transaction runner, reporting a TransactionConflict for the next `left` runs
    (nothing written, as DynamoDB cancels a conflicting transaction)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.left = 0
        self.injected = 0

    def run(self, body: Any) -> TxOutcome:
        if self.left > 0:
            self.left -= 1
            self.injected += 1
            return TxOutcome(committed=False, conflict=True)
        return self.real.run(body)


# --- the model -----------------------------------------------------------------------------------


@dataclass
class Tracked:
    """One order as the model sees it."""

    order: Order
    buyer: Principal
    paid: bool = False
    received: bool = False
    cancelled: bool = False
    refunds: list[tuple[str, int, bool]] = field(default_factory=list)  # (number, amount, fails at WeChat)

    @property
    def id(self) -> str:
        return self.order.id

    @property
    def amount(self) -> int:
        return self.order.amount_fen

    @property
    def refunded(self) -> int:
        """What stays refunded once WeChat has answered every refund."""
        return sum(amount for _, amount, fails in self.refunds if not fails)


@dataclass
class Withdrawn:
    id: str
    who: Principal
    amount: int


def _net_share(original: int, paid: int, refunded: int) -> int:
    """A level's commission once `refunded` of `paid` is refunded (rounded down)."""
    return original * (paid - refunded) // paid


class LifecycleMachine(RuleBasedStateMachine):
    """One example: a fresh plan, fresh users and products; the session's stack and tenant."""

    stack: Stack
    owner: Principal
    finance: Principal
    tap: Tap
    conflicts: Conflicts
    client: Any
    pay_twin: Any
    transfer_twin: Any

    # --- set-up --------------------------------------------------------------------------------

    @initialize(
        rates=st.lists(st.integers(50, 1500), min_size=1, max_size=3),
        headroom=st.integers(0, 1000),
        trigger=st.sampled_from([Trigger.PAID, Trigger.RECEIVED]),
        self_purchase=st.booleans(),
        depth=st.integers(1, 4),
        prices=st.lists(st.integers(100, 20_000), min_size=2, max_size=2),
    )
    def start(
        self, rates: list[int], headroom: int, trigger: Trigger, self_purchase: bool, depth: int, prices: list[int]
    ) -> None:
        self.users: list[Principal] = []
        self.orders: list[Tracked] = []
        self.withdrawals: list[Withdrawn] = []
        self.calm = False  # whether every stream record and notification was delivered since the last change
        self.rewound = False
        # Only this example delivers records: a background runner in the same test process (the e2e
        # stack's) waits until teardown, so the same steps always meet the same state.
        self._paused = self.stack.runner.paused()
        self._paused.__enter__()
        self._leave_nothing_behind()
        body = {
            "rates_bps": rates,
            "cap_bps": min(sum(rates) + headroom, 10_000),
            "trigger": trigger.value,
            "self_purchase": self_purchase,
            "settle_after_days": 7,
        }
        plan = plans.plan(self.stack.tenant, activate(self.owner, body))
        assert plan is not None
        self.plan = plan
        self.users = chain(self.stack, depth)
        self.upline: dict[str, tuple[str, ...]] = {
            who.subject: tuple(reversed([u.subject for u in self.users[:i]]))[:3] for i, who in enumerate(self.users)
        }
        self.products = [product(self.stack, price) for price in prices]
        self._drain()
        self.tap.applied.clear()
        self.checkpoints = self._checkpoints()
        self.dead_letters = self._dead_letters()
        self.started = True

    def teardown(self) -> None:
        failing = sys.exc_info()[0] is not None
        try:
            if getattr(self, "started", False) and not failing:
                self._final_check()
        finally:
            self.tap.broken.clear()
            self.conflicts.left = 0
            self.pay_twin.clear_faults()
            self.transfer_twin.clear_faults()
            paused = getattr(self, "_paused", None)
            if paused is not None:
                paused.__exit__(None, None, None)

    def _final_check(self) -> None:
        """Nothing parked forever: the faults end, a redrive replays what waits, and then nothing waits."""
        self.tap.broken.clear()
        self.conflicts.left = 0
        jobs.run_for_tenant("redrive_parked", self.stack.tenant, actor="system:redrive_parked", now=utcnow())
        self._drain()
        for source in SOURCES:
            assert get_store().parked.waiting(self.stack.tenant, source) == 0, source
        for who in self.users:
            assert_money_conserved(self.stack, who)
        self.books()

    # --- helpers -------------------------------------------------------------------------------

    def _leave_nothing_behind(self) -> None:
        """Earlier examples share the tenant: whatever they left (records, parked records, due
        lines) is finished first, so that this example's steps act on its own data only (the
        same steps must do the same things when Hypothesis replays them)."""
        self.tap.broken.clear()
        self.conflicts.left = 0
        self.stack.drain()
        jobs.run_for_tenant("redrive_parked", self.stack.tenant, actor="system:redrive_parked", now=utcnow())
        self.stack.drain()
        self.settle()

    def _drain(self) -> None:
        self.stack.drain()
        self.calm = True

    def _checkpoints(self) -> dict[str, Any]:
        streams = self.stack.runner._checkpoints._data["streams"]
        return {name: copy.deepcopy(streams.get(name)) for name in STREAM_HANDLERS}

    def _dead_letters(self) -> int:
        path = self.stack.runner.state_dir / "dlq" / "on_order_change.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def _pick(self, items: Sequence[Any], index: int) -> Any:
        return items[index % len(items)]

    def _orders(self, *statuses: OrderStatus) -> list[Tracked]:
        return [t for t in self.orders if self._status(t) in statuses]

    @staticmethod
    def _status(t: Tracked) -> OrderStatus:
        if t.cancelled:
            return OrderStatus.CANCELLED
        if t.received:
            return OrderStatus.RECEIVED
        return OrderStatus.PAID if t.paid else OrderStatus.CREATED

    def _stored(self, order_id: str) -> Order:
        order = get_store().orders.get(self.stack.tenant, order_id)
        assert order is not None
        return order

    def _snapshot(self) -> dict[str, Any]:
        """Every account and line of the example's promoters (what a replay must not change)."""
        store = get_store()
        return {
            who.subject: (
                store.ledger.account(self.stack.tenant, who.subject),
                sorted(store.ledger.all_lines(self.stack.tenant, who.subject), key=lambda line: line.sk),
            )
            for who in self.users
        }

    # --- binding -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.users) < MAX_USERS)
    @rule(parent=st.integers(0, 100), who=st.integers(0, 100), sharer=st.integers(0, 100))
    def bind(self, parent: int, who: int, sharer: int) -> None:
        """A new user scans a member's code and is bound below them (their upline: the three
        nearest); then a member scans a member's code: never a rebinding, a self-binding or a cycle."""
        parent_user = self._pick(self.users, parent)
        friend = self.stack.principal(logins.login(f"dev-{unique('m')}", self.stack.tenant).user.id)
        result = referrals.scan(friend, shares.create(parent_user, None, None).code)
        assert result.status.value == "bound"
        self.users.append(friend)
        self.upline[friend.subject] = (parent_user.subject, *self.upline[parent_user.subject])[:3]
        assert result.upline == self.upline[friend.subject]
        user, other = self._pick(self.users, who), self._pick(self.users, sharer)
        result = referrals.scan(user, shares.create(other, None, None).code)
        assert result.status.value != "bound", (user.subject, other.subject)
        stored = get_store().users.get(self.stack.tenant, user.subject)
        assert stored is not None and stored.upline == self.upline[user.subject]

    # --- orders --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.orders) < MAX_ORDERS)
    @rule(
        buyer=st.integers(0, 100),
        item=st.integers(0, 1),
        qty=st.integers(1, 3),
        shared=st.booleans(),
    )
    def place(self, buyer: int, item: int, qty: int, shared: bool) -> None:
        who = self._pick(self.users, buyer)
        pid = self.products[item]
        sharer_code = None
        if shared and self.upline[who.subject]:
            sharer = next(u for u in self.users if u.subject == self.upline[who.subject][0])
            sharer_code = shares.create(sharer, pid, "wechat").code
        order = orders.place(who, [(pid, qty)], sharer_code, None)
        self.calm = False
        assert order.snapshot.upline == self.upline[who.subject]
        assert order.snapshot.plan_version == self.plan.version
        self.orders.append(Tracked(order, who))

    def _pay(self, t: Tracked, repeat: int, lost: bool) -> None:
        if lost:  # the notification never comes: reconciliation asks WeChat
            self.pay_twin.inject("drop_notification", ref=t.id)
        orders.sandbox_pay_success(t.buyer, t.id)
        if lost:
            assert self._stored(t.id).status is OrderStatus.CREATED
            later = utcnow() + orders.RECONCILE_AFTER + timedelta(minutes=1)
            jobs.run_for_tenant("reconcile_payments", self.stack.tenant, actor=orders.RECONCILE_ACTOR, now=later)
        t.paid = True
        self.calm = False
        assert self._stored(t.id).status is OrderStatus.PAID
        for _ in range(repeat):
            self._notify_paid_again(t)

    def _notify_paid_again(self, t: Tracked) -> None:
        """WeChat delivers the payment notification again, over HTTP to the tenant's notify URL."""
        user = get_store().users.get(self.stack.tenant, t.buyer.subject)
        assert user is not None
        headers, body = self.pay_twin.notification_for(t.id, t.amount, user.openid)
        path = f"/v1/callbacks/wechatpay/{self.stack.tenant}/payment"
        for _ in range(2):  # the same request twice, as WeChat retries it
            response = self.client.http.post(path, headers={**headers, "Content-Type": "application/json"}, body=body)
            assert response.status_code == 200, response.body

    @precondition(lambda self: self._orders(OrderStatus.CREATED))
    @rule(index=st.integers(0, 100), repeat=st.integers(0, 1), lost=st.booleans(), deliver=st.booleans())
    def pay(self, index: int, repeat: int, lost: bool, deliver: bool) -> None:
        self._pay(self._pick(self._orders(OrderStatus.CREATED), index), repeat, lost)
        if deliver:
            self._drain()

    @precondition(lambda self: self._orders(OrderStatus.CREATED))
    @rule(index=st.integers(0, 100), prepaid=st.booleans())
    def cancel(self, index: int, prepaid: bool) -> None:
        t = self._pick(self._orders(OrderStatus.CREATED), index)
        if prepaid:
            orders.pay(t.buyer, t.id)
        orders.cancel(t.buyer, t.id)
        t.cancelled = True
        self.calm = False
        if prepaid:  # closed at WeChat: the buyer can no longer pay it
            with pytest.raises(StateConflict):
                self.pay_twin.user_pays(t.id)

    @precondition(lambda self: self._orders(OrderStatus.PAID))
    @rule(index=st.integers(0, 100), deliver=st.booleans(), late_notification=st.booleans())
    def receive(self, index: int, deliver: bool, late_notification: bool) -> None:
        t = self._pick(self._orders(OrderStatus.PAID), index)
        orders.confirm_receipt(t.buyer, t.id)
        t.received = True
        self.calm = False
        if late_notification:  # the payment notification again, after receipt
            self._notify_paid_again(t)
        if deliver:
            self._drain()

    @precondition(lambda self: len(self.orders) < MAX_ORDERS)
    @rule(buyer=st.integers(0, 100), item=st.integers(0, 1), qty=st.integers(1, 3), received=st.booleans())
    def sale(self, buyer: int, item: int, qty: int, received: bool) -> None:
        """Placed, paid (and received) and delivered in one step, so that money moves on further."""
        self.place(buyer, item, qty, shared=True)
        t = self.orders[-1]
        self._pay(t, 0, lost=False)
        if received:
            orders.confirm_receipt(t.buyer, t.id)
            t.received = True
        self._drain()

    @precondition(lambda self: any(t.amount > sum(a for _, a, _ in t.refunds) for t in self._refundable()))
    @rule(
        index=st.integers(0, 100),
        full=st.booleans(),
        part=st.floats(0.01, 0.99),
        fails=st.booleans(),
        double=st.sampled_from(["no", "key", "click"]),
        deliver=st.booleans(),
        late_notification=st.booleans(),
    )
    def refund(
        self, index: int, full: bool, part: float, fails: bool, double: str, deliver: bool, late_notification: bool
    ) -> None:
        candidates = [t for t in self._refundable() if self._stored(t.id).refundable_fen > 0]
        t = self._pick(candidates, index)
        order = self._stored(t.id)
        amount = order.refundable_fen if full else max(1, int(order.refundable_fen * part))
        number = f"{t.id}R{len(order.refunds) + 1:02d}"
        if fails:
            self.pay_twin.inject("refund_abnormal", ref=number)
        key = uuid.uuid4().hex if double == "key" else None
        reason = f"lifecycle test {number}"  # the same amount and reason at once would be a double click
        view, created = refunds.request(self.owner, t.id, amount, reason, key)
        assert created and view["refund_id"] == number
        if double != "no":  # submitted again with its Idempotency-Key, or a double click: the same refund
            again, created_again = refunds.request(self.owner, t.id, amount, reason, key)
            assert not created_again and again["refund_id"] == number
        t.refunds.append((number, amount, fails))
        self.calm = False
        if late_notification:  # the payment notification again, after the refund
            self._notify_paid_again(t)
        if deliver:
            self._drain()

    def _refundable(self) -> list[Tracked]:
        return self._orders(OrderStatus.PAID, OrderStatus.RECEIVED)

    # --- jobs, withdrawals, payouts ------------------------------------------------------------

    @precondition(lambda self: any(t.received for t in self.orders))
    @rule()
    def settle(self) -> None:
        """A settle run past every return window: once every order event is applied, nothing of
        the example stays frozen (an adjustment line follows its original line)."""
        jobs.run_for_tenant("settle", self.stack.tenant, actor="system:settle", now=utcnow() + SETTLE_AHEAD)
        if self.calm and not self.tap.broken:
            for who in self.users:
                frozen = [
                    x for x in get_store().ledger.all_lines(self.stack.tenant, who.subject) if x.state == "frozen"
                ]
                assert not frozen, frozen

    def _available(self) -> list[tuple[Principal, int]]:
        ledger = get_store().ledger
        found = [(who, ledger.account(self.stack.tenant, who.subject)["available_fen"]) for who in self.users]
        return [(who, fen) for who, fen in found if fen >= OPEN_RULES["min_fen"]]

    @precondition(lambda self: any(t.received for t in self.orders))
    @rule(index=st.integers(0, 100), part=st.floats(0.0, 1.0), approve=st.booleans())
    def withdraw(self, index: int, part: float, approve: bool) -> None:
        ready = self._available()
        if not ready:
            return
        who, available = self._pick(ready, index)
        amount = max(OPEN_RULES["min_fen"], int(available * part))
        body, created = withdrawals.request(who, amount)
        assert created
        self.withdrawals.append(Withdrawn(body["id"], who, amount))
        if approve:
            withdrawals.approve(self.finance, body["id"])

    @precondition(lambda self: self.withdrawals)
    @rule(index=st.integers(0, 100), action=st.sampled_from(["approve", "reject", "cancel"]))
    def review(self, index: int, action: str) -> None:
        w = self._pick(self.withdrawals, index)
        try:
            if action == "approve":
                withdrawals.approve(self.finance, w.id)
            elif action == "reject":
                withdrawals.reject(self.finance, w.id, "lifecycle test")
            else:
                withdrawals.cancel(w.who, w.id)
        except StateConflict:
            pass  # not in a state that allows it

    @precondition(lambda self: self.withdrawals)
    @rule(confirm=st.sampled_from([None, True, False]))
    def payout_run(self, confirm: bool | None) -> None:
        """The payout run sends every approved withdrawal; the users confirm at once (or later)."""
        jobs.run_for_tenant("payout_run", self.stack.tenant, actor="system:payout_run", now=utcnow())
        self._drain()
        if confirm is not None:
            for index in range(len(self.withdrawals)):
                self.user_confirms(index, confirm)

    @precondition(lambda self: self.withdrawals)
    @rule(index=st.integers(0, 100), succeed=st.booleans())
    def user_confirms(self, index: int, succeed: bool) -> None:
        w = self._pick(self.withdrawals, index)
        stored = get_store().withdrawals.get(self.stack.tenant, w.id)
        assert stored is not None
        if stored.state is not WithdrawalState.WAIT_USER_CONFIRM:
            return
        if not succeed:
            self.transfer_twin.inject("fail", out_bill_no=w.id)
        after = withdrawals.sandbox_user_confirm(w.who, w.id)
        assert after["state"] == ("paid" if succeed else "failed")

    # --- delivery and faults -------------------------------------------------------------------

    @precondition(lambda self: not self.calm)
    @rule()
    def deliver(self) -> None:
        self._drain()

    @precondition(lambda self: self.orders and not self.conflicts.left)
    @rule(times=st.sampled_from([1, 2, 6]))
    def transaction_conflict(self, times: int) -> None:
        """The next ledger transactions are cancelled with TransactionConflict (6: one write's
        every attempt, so the record fails and is delivered again)."""
        self.conflicts.left = times

    @precondition(lambda self: self.calm and self.tap.applied)
    @rule(seed=st.integers(0, 2**32), size=st.integers(1, 20))
    def replay_delivered(self, seed: int, size: int) -> None:
        """Records the engine applied, delivered again in another order, each twice: nothing changes."""
        before = self._snapshot()
        rng = random.Random(seed)
        records = [self.tap.applied[k] for k in sorted(self.tap.applied)]
        batch = rng.sample(records, min(size, len(records)))
        commissions.process_stream_batch(copy.deepcopy(batch + rng.sample(batch, len(batch))))
        assert self._snapshot() == before

    @precondition(lambda self: self.calm and not self.rewound and any(t.paid for t in self.orders))
    @rule()
    def replay_stream(self) -> None:
        """The runner's checkpoints rewound to the example's start: every record delivered again."""
        self.rewound = True
        before = self._snapshot()
        streams = self.stack.runner._checkpoints._data["streams"]
        for name, saved in self.checkpoints.items():
            if saved is None:
                streams.pop(name, None)
            else:
                streams[name] = copy.deepcopy(saved)
        self._drain()
        assert self._snapshot() == before

    @precondition(lambda self: self.orders and not self.tap.broken)
    @rule(index=st.integers(0, 100))
    def break_order(self, index: int) -> None:
        """Every record of this order fails from now on (until redriven): it is parked."""
        self.tap.broken.add(self._pick(self.orders, index).id)

    @precondition(lambda self: self.tap.broken)
    @rule()
    def heal_and_redrive(self) -> None:
        self.tap.broken.clear()
        self.conflicts.left = 0
        jobs.run_for_tenant("redrive_parked", self.stack.tenant, actor="system:redrive_parked", now=utcnow())
        self._drain()
        for source in SOURCES:
            assert get_store().parked.waiting(self.stack.tenant, source) == 0, source

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def books(self) -> None:
        if not getattr(self, "started", False):
            return
        # One snapshot: a background runner (the e2e stack's, in the same test process) waits.
        with self.stack.runner.paused():
            self._books()

    def _books(self) -> None:
        lines_by_order: dict[str, list[LedgerLine]] = defaultdict(list)
        paid_out: dict[str, int] = defaultdict(int)
        withdrawing: dict[str, int] = defaultdict(int)
        for w in self.withdrawals:
            state = self._withdrawal_state(w)
            if state is WithdrawalState.PAID:
                paid_out[w.who.subject] += w.amount
            elif state not in FINAL:
                withdrawing[w.who.subject] += w.amount
        for who in self.users:
            lines = get_store().ledger.all_lines(self.stack.tenant, who.subject)
            account = get_store().ledger.account(self.stack.tenant, who.subject)
            self._conserved(account, lines)
            assert account["paid_fen"] == paid_out[who.subject], (who.subject, account)
            assert account["withdrawing_fen"] == withdrawing[who.subject], (who.subject, account)
            for line in lines:
                assert 1 <= line.level <= 3, line
                lines_by_order[line.order_id].append(line)
        known = {t.id for t in self.orders}
        assert set(lines_by_order) <= known, set(lines_by_order) - known
        quiet = self._quiet()
        for t in self.orders:
            self._order_lines(t, lines_by_order[t.id], settled=quiet)
        if quiet:
            self._sales_recounted()
        assert self._dead_letters() == self.dead_letters, "the runner dead-lettered an order record"

    def _quiet(self) -> bool:
        """Whether every order event has reached the ledger (streams drained, nothing parked)."""
        return self.calm and not self.tap.broken and not get_store().parked.waiting(self.stack.tenant, "orders")

    def _sales_recounted(self) -> None:
        """The ladder's counters (level-1 promoter, month of payment) equal a recount: the net paid
        amount of each order that earns commission, once; refunded sales do not count."""
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for t in self.orders:
            if not self._earnings(t):
                continue
            snapshot = t.order.snapshot
            attribution = Attribution(t.order.buyer, snapshot.upline, snapshot.buyer_is_promoter)
            level1 = commission.earners(attribution, self.plan, lambda _: True)[0][1]
            paid_at = self._stored(t.id).paid_at
            assert paid_at is not None
            month = paid_at.astimezone(ZoneInfo(self.plan.timezone)).strftime("%Y-%m")
            expected[(f"l1sales#{level1}", month)] += t.amount - t.refunded
        if expected:
            assert get_store().ledger.counters(self.stack.tenant, expected) == expected

    @staticmethod
    def _conserved(account: Mapping[str, int], lines: Sequence[LedgerLine]) -> None:
        """The relation of `assert_money_conserved`, on lines and an account read once."""
        by_state: dict[str, int] = defaultdict(int)
        for line in lines:
            by_state[line.state] += line.amount_fen
        assert sum(by_state.values()) == sum(account[b] for b in BUCKETS), (account, dict(by_state))
        assert account["pending_fen"] == by_state["pending"], (account, dict(by_state))
        assert account["frozen_fen"] == by_state["frozen"], (account, dict(by_state))
        assert account["available_fen"] + account["withdrawing_fen"] + account["paid_fen"] == by_state["available"]
        assert all(account[b] >= 0 for b in BUCKETS if b != "available_fen"), account

    def _withdrawal_state(self, w: Withdrawn) -> WithdrawalState:
        stored = get_store().withdrawals.get(self.stack.tenant, w.id)
        assert stored is not None
        bill = self.transfer_twin.query_bill(w.id)
        if bill is not None and bill.state == "SUCCESS":
            assert stored.state is WithdrawalState.PAID, (w.id, stored.state, "WeChat paid it")
        if stored.state is WithdrawalState.PAID:
            assert bill is not None and bill.state == "SUCCESS", (w.id, bill)
        return stored.state

    def _earnings(self, t: Tracked) -> list[commission.Earning]:
        """The order's commission on its whole paid amount, once it earns (by the plan's trigger)."""
        earning = t.paid and not t.cancelled and (self.plan.trigger is Trigger.PAID or t.received)
        if not earning:
            return []
        snapshot = t.order.snapshot
        return commission.compute(
            [OrderLine(x.product_id, x.qty, x.paid_fen) for x in t.order.lines],
            Attribution(t.order.buyer, snapshot.upline, snapshot.buyer_is_promoter),
            self.plan,
            at=utcnow(),
            month_sales_fen={},
        )

    def _expected(self, t: Tracked) -> dict[int, tuple[str, int]]:
        """Each level's promoter and commission once every event of the order is applied."""
        return {e.level: (e.promoter, _net_share(e.amount_fen, t.amount, t.refunded)) for e in self._earnings(t)}

    def _order_lines(self, t: Tracked, lines: Sequence[LedgerLine], *, settled: bool) -> None:
        cap = min(t.amount * self.plan.cap_bps // 10_000, t.amount)
        assert sum(line.amount_fen for line in lines) <= cap, (t.id, lines)
        by_level: dict[int, list[LedgerLine]] = defaultdict(list)
        for line in lines:
            by_level[line.level].append(line)
        expected = self._expected(t)
        for level, group in by_level.items():
            assert level in expected or not settled, (t.id, level, group)
            assert len({line.promoter for line in group}) == 1, group
            if level in expected:
                assert group[0].promoter == expected[level][0], (t.id, level, group)
        if not settled:
            return
        stored = self._stored(t.id)
        assert stored.status is self._status(t), (t.id, stored.status)
        assert stored.refunded_fen == t.refunded, (t.id, stored.refunded_fen, t.refunds)
        for number, _, fails in t.refunds:
            refund = stored.refund(number)
            assert refund is not None
            assert refund.state is (RefundState.FAILED if fails else RefundState.SUCCEEDED), (number, refund)
        for level, (_, amount) in expected.items():
            got = sum(line.amount_fen for line in by_level.get(level, []))
            assert got == amount, (t.id, level, got, amount, by_level.get(level))


def test_the_money_lifecycle_holds_its_invariants_under_any_sequence_and_fault(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalice.test import Client

    from app import app
    from chalicelib.wechat import get_pay, get_transfer

    LifecycleMachine.stack = stack
    LifecycleMachine.owner = stack.principal("owner", Role.OWNER)
    LifecycleMachine.finance = stack.principal("finance", Role.FINANCE)
    LifecycleMachine.pay_twin = get_pay(stack.tenant)
    LifecycleMachine.transfer_twin = get_transfer(stack.tenant)
    LifecycleMachine.client = Client(app)
    tap = Tap(orders_stream.process_records)
    monkeypatch.setattr(orders_stream, "process_records", tap)
    LifecycleMachine.tap = tap
    ledger = get_store().ledger
    conflicts = Conflicts(ledger._tx)
    monkeypatch.setattr(ledger, "_tx", conflicts)
    LifecycleMachine.conflicts = conflicts
    withdrawals.set_rules(LifecycleMachine.finance, OPEN_RULES)

    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=30,
            deadline=None,
            database=None,  # examples replayed from another run would meet another database state
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
