"""Parking stream records: the pure decisions (chalicelib/parking.py) and the wrapper the stream
handlers run their processor through (chalicelib/events/parking.py), over an in-memory store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import parking
from chalicelib.events import parking as wrapper
from chalicelib.observability import logger
from chalicelib.parking import PARK_AFTER, Reason, StreamRef, decide, ref_of, sequence_key
from tests import events

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TENANT = "wxunit0000000001"


def record(entity: str, sequence: int, action: str = "order.paid", tenant: str = TENANT) -> dict[str, Any]:
    """A Lambda-shaped orders stream record of item `tenant#entity`."""
    return events.order_record(tenant, entity, {"event_action": action}, name="MODIFY", sequence=sequence)


def refs(*pairs: tuple[str, int]) -> list[StreamRef]:
    return [ref_of(record(entity, seq)) for entity, seq in pairs]


# --- pure decisions -----------------------------------------------------------------------------


def test_a_record_belongs_to_its_tenant_and_item() -> None:
    ref = ref_of(record("o-1", 1200))
    assert ref == StreamRef(tenant=TENANT, entity=f"{TENANT}#o-1", sequence="1200")
    assert parking.action_of(record("o-1", 1, "order.refunded")) == "order.refunded"


def test_a_record_without_readable_keys_is_an_item_of_its_own() -> None:
    broken = {"dynamodb": {"SequenceNumber": "7", "Keys": {"pk": {"B": "AA=="}}}}
    assert ref_of(broken) == StreamRef(tenant="unknown", entity="record:7", sequence="7")


def test_sequence_keys_sort_in_stream_order() -> None:
    numbers = ["9", "100000000000000000000", "21000000000000000000001", "3" * 40]
    assert sorted(numbers, key=sequence_key) == sorted(numbers, key=int)


def test_records_of_blocked_items_wait_behind_them() -> None:
    batch = refs(("a", 1), ("b", 2), ("a", 3))
    run, behind = parking.split_blocked(batch, {(TENANT, f"{TENANT}#a")})
    assert [r.sequence for r in run] == ["2"]
    assert [r.sequence for r in behind] == ["1", "3"]


def test_a_failure_below_the_limit_is_reported_from_the_items_first_failed_record_on() -> None:
    # Given a's second record fails (its third too, behind it), b fails nothing
    batch = refs(("a", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5))
    decision = decide(batch, failed=["2", "4"], attempts={"2": PARK_AFTER - 1})
    # Then a is reported from 2 on, 1 (applied before) and b are not
    assert decision == parking.Decision(park=[], report=["2", "4"])


def test_at_the_limit_the_record_and_its_items_later_records_are_parked_and_nothing_is_reported() -> None:
    batch = refs(("a", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5))
    # a's record 4 was applied by the processor, yet it must not overtake record 2
    decision = decide(batch, failed=["2", "5"], attempts={"2": PARK_AFTER, "5": 1})
    assert [(r.sequence, reason) for r, reason in decision.park] == [("2", Reason.FAILED), ("4", Reason.BEHIND)]
    assert decision.report == ["5"]


def test_failures_the_batch_does_not_contain_are_reported() -> None:
    decision = decide(refs(("a", 1)), failed=["99"], attempts={})
    assert decision.report == ["99"]


def test_only_each_items_first_failure_is_charged() -> None:
    batch = refs(("a", 1), ("a", 2), ("b", 3))
    assert [r.sequence for r in parking.causes(batch, ["2", "1", "3"])] == ["1", "3"]


batches = st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(0, 2 * PARK_AFTER)), max_size=12)


@given(batches)
def test_every_failure_is_parked_or_reported_and_no_item_overtakes_its_failure(
    rows: list[tuple[str, bool, int]],
) -> None:
    batch = [ref_of(record(entity, i + 1)) for i, (entity, _, _) in enumerate(rows)]
    failed = [ref.sequence for ref, (_, fails, _) in zip(batch, rows, strict=True) if fails]
    attempts = {ref.sequence: tries for ref, (_, _, tries) in zip(batch, rows, strict=True)}
    decision = decide(batch, failed, attempts)
    parked = [ref.sequence for ref, _ in decision.park]
    # every failed record is handled once
    assert set(failed) <= set(parked) | set(decision.report)
    assert not set(parked) & set(decision.report)
    for entity in "abc":
        mine = [ref.sequence for ref in batch if ref.entity.endswith(f"#{entity}")]
        first = next((s for s in mine if s in failed), None)
        handled = [s for s in mine if s in parked or s in decision.report]
        # from the item's first failure on, every record of it is handled, none before it
        assert handled == ([] if first is None else mine[mine.index(first) :])
        # and all the same way: all parked or all reported
        assert all(s in parked for s in handled) or all(s in decision.report for s in handled)
        if first is not None:
            assert (first in parked) == (attempts[first] >= PARK_AFTER)


# --- the wrapper, over an in-memory store -------------------------------------------------------


@dataclass
class FakeParked:
    """The parked store's stream side, in memory."""

    tries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_errors: dict[str, str] = field(default_factory=dict)
    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def blocked(self, source: str, items: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        waiting = {(r["tenant"], r["entity"]) for r in self.records.values()}
        return set(items) & waiting

    def count_failure(self, source: str, ref: StreamRef, error: str, now: datetime) -> tuple[int, str]:
        self.tries[ref.sequence] += 1
        self.first_errors.setdefault(ref.sequence, error)
        return self.tries[ref.sequence], self.first_errors[ref.sequence]

    def park(
        self,
        source: str,
        ref: StreamRef,
        content: Mapping[str, Any],
        *,
        reason: Reason,
        attempts: int,
        errors: tuple[str, str] | None,
        now: datetime,
    ) -> bool:
        key = (source, ref.sequence)
        if key in self.records:
            return False
        self.records[key] = {
            "tenant": ref.tenant,
            "entity": ref.entity,
            "record": content,
            "reason": reason,
            "attempts": attempts,
            "errors": errors,
        }
        return True


@dataclass
class FakeStore:
    parked: FakeParked = field(default_factory=FakeParked)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    monkeypatch.setattr("chalicelib.store.get_store", lambda: fake)
    return fake


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counted: dict[str, int] = defaultdict(int)

    def count(name: str, value: int = 1, **dimensions: str) -> None:
        counted[name] += value

    monkeypatch.setattr(wrapper, "count", count)
    return counted


@dataclass
class Engine:
    """A processor that fails every record of the `broken` orders (and logs why, as commissions does)."""

    broken: set[str] = field(default_factory=set)
    applied: list[str] = field(default_factory=list)

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        failures = []
        for rec in records:
            order = ref_of(rec).entity.split("#", 1)[1]
            if order in self.broken:
                logger.error("commission write failed", extra={"order": order})
                failures.append({"itemIdentifier": rec["dynamodb"]["SequenceNumber"]})
            else:
                self.applied.append(rec["dynamodb"]["SequenceNumber"])
        return {"batchItemFailures": failures}


def deliver(batch: list[dict[str, Any]], engine: Engine) -> list[str]:
    response = wrapper.process("orders", batch, engine, now=NOW)
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_a_record_is_reported_until_its_fifth_failure_then_parked_with_its_content_and_error(
    store: FakeStore, metrics: dict[str, int]
) -> None:
    # Given order o-1's payment keeps failing, o-2's goes through
    engine = Engine(broken={"o-1"})
    batch = [record("o-1", 10), record("o-2", 11), record("o-1", 12, "order.refunded")]

    # When Lambda delivers the batch again from the first failure, as long as it is reported
    for _ in range(PARK_AFTER - 1):
        assert deliver(batch, engine) == ["10", "12"]
    assert not store.parked.records

    # Then the fifth failure parks the payment with its content and error, the refund behind it
    assert deliver(batch, engine) == []
    paid = store.parked.records[("orders", "10")]
    assert paid["record"] == batch[0]
    assert paid["reason"] is Reason.FAILED
    assert paid["attempts"] == PARK_AFTER
    assert paid["errors"] == ("commission write failed", "commission write failed")
    assert store.parked.records[("orders", "12")]["reason"] is Reason.BEHIND
    assert metrics["EventsParked"] == 2
    assert "11" in engine.applied


def test_later_records_of_a_parked_item_wait_unprocessed_while_other_items_go_through(
    store: FakeStore, metrics: dict[str, int]
) -> None:
    engine = Engine(broken={"o-1"})
    for _ in range(PARK_AFTER):
        deliver([record("o-1", 20)], engine)
    assert ("orders", "20") in store.parked.records

    # When the fault is gone, a later record of o-1 still waits behind the parked one
    engine.broken.clear()
    assert deliver([record("o-3", 21), record("o-1", 22, "order.refunded")], engine) == []
    assert engine.applied == ["21"]
    assert store.parked.records[("orders", "22")]["reason"] is Reason.BEHIND
    assert "22" not in store.parked.tries  # waiting is not failing


def test_a_redelivered_parked_record_is_not_parked_or_counted_twice(store: FakeStore, metrics: dict[str, int]) -> None:
    engine = Engine(broken={"o-1"})
    for _ in range(PARK_AFTER):
        deliver([record("o-1", 30)], engine)
    deliver([record("o-1", 30)], engine)  # the response was lost: Lambda delivers it again
    assert metrics["EventsParked"] == 1


def test_a_processor_that_raises_fails_each_record_and_they_park_in_time(
    store: FakeStore, metrics: dict[str, int]
) -> None:
    def crash(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        raise RuntimeError("table throttled")

    batch = [record("o-4", 40), record("o-5", 41)]
    for _ in range(PARK_AFTER - 1):
        assert wrapper.process("orders", batch, crash, now=NOW)["batchItemFailures"]
    assert wrapper.process("orders", batch, crash, now=NOW) == {"batchItemFailures": []}
    assert store.parked.records[("orders", "40")]["errors"][1] == "RuntimeError: table throttled"
    assert metrics["EventsParked"] == 2


def test_errors_are_attributed_to_the_records_they_name() -> None:
    with wrapper.capture_errors() as captured:
        logger.error("audit failed", extra={"order": "o-7"})
        logger.error("commission write failed", extra={"order": "o-8"})
    assert captured.error_for(ref_of(record("o-8", 1))) == "commission write failed"
    assert captured.error_for(ref_of(record("o-9", 2))) == "audit failed; commission write failed"


def test_every_parking_source_has_a_processor() -> None:
    for source in parking.SOURCES:
        assert callable(wrapper.processor_for(source))
    with pytest.raises(ValueError, match="no stream processor"):
        wrapper.processor_for("ledger")
