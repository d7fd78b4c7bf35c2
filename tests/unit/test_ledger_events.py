"""What a paid / received / refunded / refund-failed / settled order writes to the ledger: the pure
rules of `chalicelib.ledger`, run against an in-memory ledger that applies writes the way the
store does (a new line only if it does not exist, a move only if the line is as it was read)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import ledger
from chalicelib.commission import Attribution, OrderLine, Plan, Trigger, compute, remaining_after_refunds
from chalicelib.ledger import Applied, LedgerLine, LedgerWrite, OrderVersion, SalesKey

AT = datetime(2026, 11, 11, 4, 0, tzinfo=UTC)
CHAIN = Attribution(buyer="buyer", upline=("l1", "l2", "l3"))
SALES = SalesKey("l1sales#l1", "2026-11")


@dataclass
class Book:
    """An in-memory ledger: lines, accounts and counters, written all-or-nothing like the store."""

    lines: dict[tuple[str, str], LedgerLine] = field(default_factory=dict)
    accounts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    stats: dict[tuple[str, str], dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def write(self, write: LedgerWrite) -> Applied:
        if any(line.key() in self.lines for line in write.new_lines):
            return Applied.REPLAY
        if any(self.lines.get(m.line.key()) != m.line for m in write.moves):
            return Applied.STALE
        for line in write.new_lines:
            self.lines[line.key()] = line
        for move in write.moves:
            moved = replace(
                move.line,
                state=move.state,
                frozen_until=move.frozen_until or move.line.frozen_until,
                trace=move.trace if move.trace is not None else move.line.trace,
            )
            self.lines[move.line.key()] = moved
        for promoter, deltas in write.accounts.items():
            for bucket, delta in deltas.items():
                self.accounts[promoter][bucket] += delta
        for key, counters in write.stats.items():
            for counter, delta in counters.items():
                self.stats[key][counter] += delta
        return Applied.WRITTEN

    def of_order(self, order_id: str) -> list[LedgerLine]:
        return [line for line in self.lines.values() if line.order_id == order_id]

    def level_sum(self, order_id: str, level: int) -> int:
        return sum(line.amount_fen for line in self.of_order(order_id) if line.level == level)

    def assert_accounts_equal_lines(self) -> None:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for line in self.lines.values():
            totals[line.promoter][f"{line.state}_fen"] += line.amount_fen
        for promoter in set(totals) | set(self.accounts):
            for bucket in ("pending_fen", "frozen_fen", "available_fen"):
                assert self.accounts[promoter][bucket] == totals[promoter][bucket], (promoter, bucket)

    def assert_adjustments_follow_their_originals(self) -> None:
        for line in self.lines.values():
            for event in line.adjustments:
                follower = self.lines.get((line.promoter, f"{line.order_id}#{line.level}#{event}"))
                assert follower is not None and follower.state == line.state


class OrderLife:
    """One order of `paid_fen` under `plan`, driven through the pure rules into a Book."""

    def __init__(self, plan: Plan, paid_fen: int, book: Book | None = None, order_id: str = "o1") -> None:
        self.plan, self.paid, self.book, self.order_id = plan, paid_fen, book or Book(), order_id
        self.version, self.refunded, self.received = 1, 0, False
        self.earnings = compute([OrderLine("p", 1, paid_fen)], CHAIN, plan, at=AT, month_sales_fen={"l1": paid_fen})
        self.refunds: dict[str, int] = {}
        self.numbered = 0
        self.created = False

    def facts(self) -> OrderVersion:
        return OrderVersion("t", self.order_id, "buyer", self.version, self.paid, self.refunded, AT)

    def _apply(self, decide: object) -> None:
        """Write what `decide()` says, reading again while lines moved; then a replay changes nothing."""
        for _ in range(3):
            outcome = self.book.write(decide())  # type: ignore[operator]
            if outcome is not Applied.STALE:
                break
        again = decide()  # type: ignore[operator]
        assert again.empty or self.book.write(again) is Applied.REPLAY

    def pay(self) -> None:
        self.version += 1
        if self.plan.trigger is Trigger.PAID:
            self._create("paid", "pending")

    def _create(self, event: str, state: str) -> None:
        until = AT + timedelta(days=7) if state == "frozen" else None

        def decide() -> LedgerWrite:
            if any(line.is_creation for line in self.book.of_order(self.order_id)):
                return LedgerWrite(self.order_id)  # written already: the engine skips it
            return ledger.creation(self.facts(), event, self.earnings, state=state, frozen_until=until, sales=SALES)

        self._apply(decide)
        # sales are counted with the lines (an order earning nothing writes nothing at all)
        self.created = any(line.is_creation for line in self.book.of_order(self.order_id))

    def receive(self) -> None:
        if self.received:
            return
        self.version += 1
        self.received = True
        if self.plan.trigger is Trigger.RECEIVED:
            self._create("received", "frozen")
        else:
            self._apply(
                lambda: ledger.receipt(self.order_id, self.book.of_order(self.order_id), AT + timedelta(days=7))
            )

    def refund(self, amount: int) -> str:
        self.version += 1
        self.numbered += 1
        number = f"r{self.numbered}"
        self.refunds[number] = amount
        self.refunded += amount
        self._apply(lambda: ledger.adjustment(self.facts(), self.book.of_order(self.order_id), f"refund-{number}", "r"))
        return number

    def refund_failed(self, number: str) -> None:
        self.version += 1
        self.refunded -= self.refunds.pop(number)
        event = f"refund-{number}-undo"
        self._apply(lambda: ledger.adjustment(self.facts(), self.book.of_order(self.order_id), event, "failed"))

    def settle(self, now: datetime) -> None:
        for key in list(self.book.lines):
            line = self.book.lines[key]
            if not line.due:
                continue
            followers = {
                e: f
                for e in line.adjustments
                if (f := self.book.lines.get((line.promoter, f"{line.order_id}#{line.level}#{e}"))) is not None
            }
            write = ledger.settlement(line, followers, now)
            if write is not None:
                assert self.book.write(write) is Applied.WRITTEN

    def assert_levels_at_net_commission(self) -> None:
        for earning in self.earnings:
            expected = remaining_after_refunds(earning.amount_fen, self.paid, self.refunded) if self.created else 0
            assert self.book.level_sum(self.order_id, earning.level) == expected
            if self.refunded == self.paid:
                assert self.book.level_sum(self.order_id, earning.level) == 0


plans_ = st.builds(
    lambda rates, trigger: Plan(version=1, rates_bps=rates, cap_bps=10_000, trigger=trigger),
    st.tuples(st.integers(1, 3000), st.integers(0, 2000), st.integers(0, 1000)),
    st.sampled_from(Trigger),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("refund"), st.integers(1, 1000)),  # per mille of what is left
        st.just(("receive", 0)),
        st.tuples(st.just("fail"), st.integers(0, 5)),  # which refund still standing fails
        st.tuples(st.just("settle"), st.integers(0, 10)),  # days after the event time
    ),
    max_size=10,
)


def live(life: OrderLife, ops: list[tuple[str, int]]) -> None:
    life.pay()
    for op, n in ops:
        if op == "refund" and life.paid > life.refunded:
            life.refund(max(1, (life.paid - life.refunded) * n // 1000))
        elif op == "receive":
            life.receive()
        elif op == "fail" and life.refunds:
            life.refund_failed(sorted(life.refunds)[n % len(life.refunds)])
        elif op == "settle":
            life.settle(AT + timedelta(days=n))
        life.assert_levels_at_net_commission()
        life.book.assert_accounts_equal_lines()
        life.book.assert_adjustments_follow_their_originals()


@settings(max_examples=300, deadline=None)  # runs under coverage on a shared machine: no time limit
@given(plan=plans_, paid=st.integers(1, 10**7), ops=steps)
def test_every_level_stays_at_its_commission_on_the_net_paid_amount(
    plan: Plan, paid: int, ops: list[tuple[str, int]]
) -> None:
    live(OrderLife(plan, paid), ops)


@settings(max_examples=200)
@given(plan=plans_, paid=st.integers(1, 10**7), ops=steps)
def test_the_ladder_counts_the_net_paid_amount_once(plan: Plan, paid: int, ops: list[tuple[str, int]]) -> None:
    life = OrderLife(plan, paid)
    live(life, ops)
    counted = life.book.stats[(SALES.scope, SALES.period)]
    net = paid - life.refunded
    assert counted["sales_fen"] == (net if life.created else 0)
    assert counted["orders"] == (1 if life.created and net > 0 else 0)


def test_the_issue_example_a_full_refund_split_around_receipt() -> None:
    # 12,000 fen, 10/5/2 % on receipt: 6,000 refunded before receipt, 6,000 after
    life = OrderLife(Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000, trigger=Trigger.RECEIVED), 12_000)
    life.pay()
    life.refund(6_000)
    life.receive()
    assert [life.book.level_sum("o1", level) for level in (1, 2, 3)] == [600, 300, 120]
    life.refund(6_000)
    assert [life.book.level_sum("o1", level) for level in (1, 2, 3)] == [0, 0, 0]


def test_a_failed_refund_is_undone_with_the_opposite_of_its_reversal_in_the_current_state() -> None:
    life = OrderLife(Plan(version=1, rates_bps=(1000, 500), cap_bps=3000), 10_000)
    life.pay()
    life.receive()
    number = life.refund(3_000)
    life.settle(AT + timedelta(days=8))  # the original line and its reversal become available
    life.refund_failed(number)
    lines = {line.event: line for line in life.book.of_order("o1") if line.level == 1}
    assert lines[f"refund-{number}"].amount_fen == -300
    assert lines[f"refund-{number}-undo"].amount_fen == 300
    assert lines[f"refund-{number}-undo"].state == "available"
    assert life.book.accounts["l1"]["available_fen"] == 1000


def test_a_stale_or_repeated_order_version_changes_nothing() -> None:
    life = OrderLife(Plan(version=1, rates_bps=(1000,), cap_bps=3000), 10_000)
    life.pay()
    life.refund(4_000)
    stale = OrderVersion("t", "o1", "buyer", life.version - 1, 10_000, 9_000, AT)
    assert ledger.adjustment(stale, life.book.of_order("o1"), "refund-old", "r").empty
    assert life.book.level_sum("o1", 1) == 600


def test_a_refund_that_read_a_line_before_it_settled_is_refused_as_stale() -> None:
    life = OrderLife(Plan(version=1, rates_bps=(1000,), cap_bps=3000), 10_000)
    life.pay()
    life.receive()
    read = life.book.of_order("o1")
    life.settle(AT + timedelta(days=8))  # the settle job moves the line meanwhile
    life.version += 1
    life.refunded = 10_000
    assert life.book.write(ledger.adjustment(life.facts(), read, "refund-r1", "r")) is Applied.STALE
    assert (
        life.book.write(ledger.adjustment(life.facts(), life.book.of_order("o1"), "refund-r1", "r")) is Applied.WRITTEN
    )
    assert life.book.accounts["l1"] == {"pending_fen": 0, "frozen_fen": 0, "available_fen": 0}


def test_a_due_line_settles_once_and_a_line_not_due_not_at_all() -> None:
    life = OrderLife(Plan(version=1, rates_bps=(1000,), cap_bps=3000), 10_000)
    life.pay()
    life.receive()
    (line,) = life.book.of_order("o1")
    assert ledger.settlement(line, {}, AT + timedelta(days=6)) is None
    write = ledger.settlement(line, {}, AT + timedelta(days=7))
    assert write is not None and write.accounts == {"l1": {"frozen_fen": -1000, "available_fen": 1000}}
    life.book.write(write)
    assert ledger.settlement(life.book.of_order("o1")[0], {}, AT + timedelta(days=7)) is None


def test_lines_written_before_they_recorded_their_sales_fall_back_to_the_counter_given() -> None:
    legacy = LedgerLine("t", "l1", "o1", 1, "paid", 1000, "pending", "buyer", {"words": "old"}, AT)
    order = OrderVersion("t", "o1", "buyer", 3, 10_000, 10_000, AT)
    write = ledger.adjustment(order, [legacy], "refund-r1", "r", fallback_sales=SALES)
    assert write.new_lines[0].amount_fen == -1000
    assert write.stats == {}  # no paid amount recorded either: nothing to take off
    legacy = replace(legacy, trace={"paid_fen": 10_000})
    write = ledger.adjustment(order, [legacy], "refund-r1", "r", fallback_sales=SALES)
    assert write.stats == {(SALES.scope, SALES.period): {"sales_fen": -10_000, "orders": -1}}


@given(paid=st.integers(1, 10**6), refunds=st.lists(st.integers(1, 10**6), max_size=4), order_count=st.integers(1, 4))
def test_many_orders_keep_their_own_lines(paid: int, refunds: list[int], order_count: int) -> None:
    book = Book()
    plan = Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=3000)
    lives = [OrderLife(plan, paid, book, f"o{i}") for i in range(order_count)]
    for life in lives:
        life.pay()
        for amount in refunds:
            if life.refunded + amount <= life.paid:
                life.refund(amount)
    for life in lives:
        life.assert_levels_at_net_commission()
    book.assert_accounts_equal_lines()
