"""The report counters as pure decisions (`chalicelib.counters`, `chalicelib.ledger` with a
`Report`): after any life of an order, replays included, every counter equals a recount of the
lines; team sizes follow any sequence of upline changes."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import counters, ledger
from chalicelib.commission import Plan
from chalicelib.counters import Sources, UserVersion
from chalicelib.ledger import LedgerWrite
from tests.unit.test_ledger_events import AT, SALES, OrderLife, plans_, steps

ZONE = "Asia/Shanghai"
SOURCES = Sources("poster", "l1", (("p1", 700), ("p2", 300)))
REPORT = ledger.Report(ZONE, SOURCES)


class ReportedLife(OrderLife):
    """An order driven through the rules with report counting on (the engine's way)."""

    def _create(self, event: str, state: str) -> None:
        until = AT + timedelta(days=7) if state == "frozen" else None

        def decide() -> LedgerWrite:
            if any(line.is_creation for line in self.book.of_order(self.order_id)):
                return LedgerWrite(self.order_id)
            return ledger.creation(
                self.facts(), event, self.earnings, state=state, frozen_until=until, sales=SALES, report=REPORT
            )

        self._apply(decide)
        self.created = any(line.is_creation for line in self.book.of_order(self.order_id))

    def _adjust(self, event: str) -> None:
        self._apply(
            lambda: ledger.adjustment(self.facts(), self.book.of_order(self.order_id), event, "w", report=REPORT)
        )

    def refund(self, amount: int) -> str:
        self.version += 1
        self.numbered += 1
        number = f"r{self.numbered}"
        self.refunds[number] = amount
        self.refunded += amount
        self._adjust(f"refund-{number}")
        return number

    def refund_failed(self, number: str) -> None:
        self.version += 1
        self.refunded -= self.refunds.pop(number)
        self._adjust(f"refund-{number}-undo")

    def assert_counters_equal_a_recount(self) -> None:
        stats = self.book.stats
        day, month = counters.day_of(AT, ZONE), counters.month_of(AT, ZONE)
        net = self.paid - self.refunded
        total = 0
        for level, promoter in ((1, "l1"), (2, "l2"), (3, "l3")):
            lines = [x for x in self.book.of_order(self.order_id) if x.level == level]
            amount = sum(x.amount_fen for x in lines)
            total += amount
            earned = bool(lines)
            got = stats.get((f"p#{promoter}", month), {})
            assert got.get(f"commission_fen_{level}", 0) == amount
            assert got.get(f"sales_fen_{level}", 0) == (net if earned else 0)
            assert got.get(f"orders_{level}", 0) == int(earned and net > 0)
            assert not stats.get((f"p#{promoter}", counters.ALL))  # lifetime: team sizes only
            assert stats.get(("day", day), {}).get(f"commission_fen_{level}", 0) == amount
        assert stats.get(("src#channel", f"{day}#poster"), {}).get("commission_fen", 0) == total
        assert stats.get(("src#promoter", f"{day}#l1"), {}).get("commission_fen", 0) == total
        products = sum(stats.get(("src#product", f"{day}#{p}"), {}).get("commission_fen", 0) for p in ("p1", "p2"))
        assert products == total


@settings(max_examples=200)
@given(plan=plans_, paid=st.integers(1, 10**7), ops=steps)
def test_commission_counters_equal_the_lines_after_any_life(plan: Plan, paid: int, ops: list[tuple[str, int]]) -> None:
    # Given an order paid, received, refunded in part or in full, refunds failing, settled
    life = ReportedLife(plan, paid)
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
        # Then (each step replayed once by `_apply`) every counter is the recount of the lines
        life.assert_counters_equal_a_recount()


def test_a_full_refund_leaves_no_order_sales_or_commission() -> None:
    life = ReportedLife(Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=10_000), 10_000)
    life.pay()
    month = counters.month_of(AT, ZONE)
    assert life.book.stats[("p#l1", month)]["orders_1"] == 1
    life.refund(10_000)
    totals = life.book.stats[("p#l1", month)]
    assert (totals["orders_1"], totals["sales_fen_1"], totals["commission_fen_1"]) == (0, 0, 0)
    life.assert_counters_equal_a_recount()


def test_lines_without_a_recorded_report_stay_out_of_the_reports() -> None:
    # Given lines written before reports were counted (no `report` in their trace)
    life = OrderLife(Plan(version=1, rates_bps=(1000, 500, 200), cap_bps=10_000), 10_000)
    life.pay()
    life.version += 1
    life.refunded = 4_000
    # When a refund adjusts them with report counting on
    write = ledger.adjustment(life.facts(), life.book.of_order("o1"), "refund-r1", "r", report=REPORT)
    # Then the commission moves but no report counter goes negative
    assert write.new_lines
    assert not [key for key in write.stats if key[0] != SALES.scope]


# --- team sizes -----------------------------------------------------------------------------


def _upline_of(parents: dict[str, str | None], uid: str) -> tuple[str, ...]:
    upline: list[str] = []
    node = parents.get(uid)
    while node is not None and len(upline) < 3:
        upline.append(node)
        node = parents.get(node)
    return tuple(upline)


@settings(max_examples=200)
@given(moves=st.lists(st.tuples(st.integers(0, 9), st.one_of(st.none(), st.integers(0, 9))), max_size=30))
def test_team_sizes_follow_every_upline_change(moves: list[tuple[int, int | None]]) -> None:
    """Users move under other parents (cycles refused); each user whose upline changes is one
    version counted once: team_k of P always equals the users with P at level k."""
    users = [f"u{i}" for i in range(10)]
    parents: dict[str, str | None] = dict.fromkeys(users)
    uplines: dict[str, tuple[str, ...]] = {u: () for u in users}
    stats: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    at = datetime(2026, 11, 11, tzinfo=UTC)

    def count(version: UserVersion) -> None:
        for key, values in counters.user_version(version, ZONE).items():
            for name, delta in values.items():
                stats[key][name] += delta

    for _ in users:
        count(UserVersion("user.created", {}, at, (), (), promoter=True, was_promoter=False))
    for child_i, parent_i in moves:
        child, parent = users[child_i], users[parent_i] if parent_i is not None else None
        if parent is not None and (parent == child or child in _walk(parents, parent)):
            continue  # a cycle: refused
        parents[child] = parent
        for u in users:  # the users stream: every user whose upline changed is a version of its own
            wanted = _upline_of(parents, u)
            if wanted != uplines[u]:
                action = "user.bound" if not uplines[u] and u == child else "user.upline_moved"
                count(UserVersion(action, {"share": "c"}, at, wanted, uplines[u], True, True))
                uplines[u] = wanted
    _assert_teams(stats, uplines)
    assert stats[("day", "2026-11-11")]["new_promoters"] == 10


def _assert_teams(stats: dict[tuple[str, str], dict[str, int]], uplines: dict[str, tuple[str, ...]]) -> None:
    for p in uplines:
        for level in (1, 2, 3):
            members = sum(1 for upline in uplines.values() if len(upline) >= level and upline[level - 1] == p)
            assert stats.get((f"p#{p}", counters.ALL), {}).get(f"team_{level}", 0) == members


def _walk(parents: dict[str, str | None], start: str) -> set[str]:
    seen: set[str] = set()
    node: str | None = start
    while node is not None and node not in seen:
        seen.add(node)
        node = parents.get(node)
    return seen


# --- small rules ----------------------------------------------------------------------------


@given(amount=st.integers(-(10**9), 10**9), weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_a_split_adds_up_and_follows_the_weights(amount: int, weights: list[int]) -> None:
    parts = counters.split(amount, weights)
    assert sum(parts) == amount
    total = sum(weights)
    if total:
        for part, weight in zip(parts, weights, strict=True):
            assert abs(part * total - amount * weight) < total


def test_refund_counters_by_action() -> None:
    at = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 2026-12-01 01:00 in Shanghai
    data = {"amount_fen": 300}
    assert counters.order_refund("order.refunded", data, False, at, ZONE) == {
        ("day", "2026-12-01"): {"refunds_fen": 300}
    }
    assert counters.order_refund("order.refund_failed", data, False, at, ZONE) == {
        ("day", "2026-12-01"): {"refunds_fen": -300}
    }
    assert counters.order_refund("order.refund_failed", data, True, at, ZONE) == {}
    assert counters.order_refund("order.refund_succeeded", data, False, at, ZONE) == {}


def test_a_paid_order_counts_on_the_tenant_day_and_each_source() -> None:
    at = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    got = counters.order_paid(1000, at, ZONE, SOURCES, first_order=True)
    assert got[("day", "2026-12-01")] == {"orders": 1, "paid_fen": 1000, "first_orders": 1}
    assert got[("src#product", "2026-12-01#p1")] == {"orders": 1, "paid_fen": 700}
    assert got[("src#channel", "2026-12-01#poster")] == {"orders": 1, "paid_fen": 1000}
    assert Sources.of(None, None, (), ()).channel == counters.DIRECT
    assert Sources.of("code", None, ("a",), ()).channel == "share"


def test_bindings_reverted_and_withdrawals_count_on_their_day() -> None:
    at = datetime(2026, 11, 11, tzinfo=UTC)
    reverted = counters.user_version(UserVersion("user.bind_reverted", {}, at, (), ("p",), True, True), ZONE)
    assert reverted[("day", "2026-11-11")] == {"new_bindings": -1}
    assert reverted[("p#p", "all")] == {"team_1": -1}
    assert counters.withdrawal("payouts_fen", 5, at, ZONE) == {("day", "2026-11-11"): {"payouts_fen": 5}}
    merged = counters.merged({("a", "b"): {"x": 1}}, {("a", "b"): {"x": -1}})
    assert merged == {}


def test_a_scan_that_binds_nobody_counts_on_the_tenants_local_day() -> None:
    from datetime import UTC, datetime

    late_utc = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)  # already the 30th in Shanghai
    assert counters.scan(late_utc, "Asia/Shanghai") == {("day", "2026-11-30"): {"scans": 1}}
    assert counters.scan(late_utc, "UTC") == {("day", "2026-11-29"): {"scans": 1}}
