"""The ledger's bookkeeping rules the order-life tests do not reach: writes merged into one
transaction, earnings worth nothing, and an adjustment written before versions were recorded."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import ledger
from chalicelib.commission import Earning, Trace
from chalicelib.ledger import LedgerLine, LedgerWrite, Move, OrderVersion

AT = datetime(2026, 11, 11, 4, 0, tzinfo=UTC)


def line(promoter: str, level: int, event: str = "paid", amount: int = 100, **trace: object) -> LedgerLine:
    return LedgerLine("wx1", promoter, "o1", level, event, amount, "pending", "buyer", dict(trace), AT)


def test_merged_writes_add_up_per_account_and_counter_and_count_their_items() -> None:
    # Given two orders' writes that touch the same account bucket and counter
    first = LedgerWrite("o1", new_lines=[line("p", 1)])
    first.add_account("p", "pending_fen", 100)
    first.add_stat("p#p", "2026-11", "commission_fen_1", 100)
    second = LedgerWrite("o2", moves=[Move(line("p", 1), "frozen")])
    second.add_account("p", "pending_fen", -30)
    second.add_account("p", "frozen_fen", 30)
    second.add_account("q", "available_fen", 5)
    second.add_account("q", "frozen_fen", 0)  # nothing to write
    second.add_stat("p#p", "2026-11", "commission_fen_1", 2)
    second.add_stat("p#q", "2026-11", "orders_1", 0)  # nothing to write

    # When they are merged into one transaction
    merged = ledger.merge([first, second])

    # Then lines and moves are kept, deltas added per item, and each item counted once
    assert merged.order_id == "*"
    assert merged.new_lines == first.new_lines and merged.moves == second.moves
    assert merged.accounts == {"p": {"pending_fen": 70, "frozen_fen": 30}, "q": {"available_fen": 5}}
    assert merged.stats == {("p#p", "2026-11"): {"commission_fen_1": 102}}
    assert ledger.tx_items(merged) == 1 + 1 + 2 + 1
    assert ledger.tx_items(ledger.merge([])) == 0 and ledger.merge([]).empty


def test_an_earning_of_nothing_writes_no_line() -> None:
    order = OrderVersion("wx1", "o1", "buyer", 1, paid_fen=1_000, refunded_fen=0, at=AT)
    earnings = [Earning(1, "p1", 0, Trace(base_fen=1_000)), Earning(2, "p2", 50, Trace(base_fen=1_000, rate_bps=500))]
    write = ledger.creation(order, "paid", earnings, state="pending", frozen_until=None, sales=None)
    assert [(x.promoter, x.amount_fen) for x in write.new_lines] == [("p2", 50)]
    assert write.accounts == {"p2": {"pending_fen": 50}}
    assert write.stats == {}


def test_an_adjustment_already_written_before_versions_were_recorded_is_not_written_again() -> None:
    # Given a level-1 line from before versions were recorded, already followed by refund-r1,
    # and a level-2 line without one
    original_1 = line("p1", 1, original_fen=100, paid_fen=1_000)
    written = line("p1", 1, "refund-r1", -50)
    original_2 = line("p2", 2, amount=40, original_fen=40, paid_fen=1_000)
    order = OrderVersion("wx1", "o1", "buyer", 2, paid_fen=1_000, refunded_fen=500, at=AT)

    # When the refund's version arrives
    write = ledger.adjustment(order, [original_1, written, original_2], "refund-r1", "refund")

    # Then only level 2 is adjusted: level 1 is left for a later version to settle
    assert [(x.promoter, x.event, x.amount_fen) for x in write.new_lines] == [("p2", "refund-r1", -20)]
    assert [m.line for m in write.moves] == [original_2]
    assert write.accounts == {"p2": {"pending_fen": -20}}
