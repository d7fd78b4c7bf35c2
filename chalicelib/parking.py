"""Parking stream records that keep failing: pure decisions, no I/O.

A stream record that fails `PARK_AFTER` deliveries in a row is parked with its full content
(stream records expire after 24 h, so a dead-letter message naming a shard range is not
enough) and is no longer reported as a failure, so the shard moves on. Events of one item
(an order, a user) must still apply in stream order: a refund must never be applied before
the payment it reverses. So while an item has a parked record, every later record of that
item is parked behind it, unprocessed; records of other items go through. A redrive replays
an item's parked records in sequence order and stops at the first one that fails again.

Lambda gives a stream handler no retry count, so failed deliveries are counted in the
parked table, per source and sequence number.

Lambda retries a stream batch from its first reported failure, so `PARK_AFTER` must stay
below the event source's `MaximumRetryAttempts + 1` deliveries (tests/unit/test_infra.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PARK_AFTER = 5  # failed deliveries of one record before it is parked
SEQUENCE_DIGITS = 40  # DynamoDB stream sequence numbers have 21 to 40 digits
SOURCES = ("orders", "users")  # streams whose handlers park (their table's logical name)


class ParkedState(StrEnum):
    PARKED = "parked"  # waiting for a redrive
    REPLAYED = "replayed"  # applied by a redrive; kept as history, never deleted


class Reason(StrEnum):
    FAILED = "failed"  # failed PARK_AFTER deliveries
    BEHIND = "behind"  # an earlier record of the same item is parked


@dataclass(frozen=True, slots=True)
class StreamRef:
    """Where a stream record belongs: tenant, item (the item's key) and position in the stream."""

    tenant: str
    entity: str
    sequence: str

    @property
    def item(self) -> tuple[str, str]:
        return self.tenant, self.entity


def ref_of(record: Mapping[str, Any]) -> StreamRef:
    """The tenant, item key and sequence number of a Lambda-shaped DynamoDB stream record.

    Every table's hash key starts with the tenant id (`tenant#...`); a record whose keys
    cannot be read becomes an item of its own, so it blocks nothing else.
    """
    dynamodb = record.get("dynamodb") or {}
    sequence = str(dynamodb.get("SequenceNumber") or "")
    keys = dynamodb.get("Keys") or {}
    values = [_scalar(keys[name]) for name in sorted(keys)]
    if not values or not all(values):
        return StreamRef(tenant="unknown", entity=f"record:{sequence}", sequence=sequence)
    entity = "|".join(values)
    tenant = values[0].split("#", 1)[0] if "#" in values[0] else "unknown"
    return StreamRef(tenant=tenant, entity=entity, sequence=sequence)


def _scalar(value: Any) -> str:
    """A stream key attribute ({"S": ...} or {"N": ...}) as text; empty when it is neither."""
    if isinstance(value, Mapping):
        for kind in ("S", "N"):
            if isinstance(value.get(kind), str):
                return str(value[kind])
    return ""


def sequence_key(sequence: str) -> str:
    """A sequence number that sorts as text in stream order (zero-padded)."""
    return sequence.zfill(SEQUENCE_DIGITS) if sequence.isdigit() else sequence


def split_blocked(refs: Sequence[StreamRef], blocked: set[tuple[str, str]]) -> tuple[list[StreamRef], list[StreamRef]]:
    """(records to process, records to park behind an item already parked)."""
    run = [ref for ref in refs if ref.item not in blocked]
    behind = [ref for ref in refs if ref.item in blocked]
    return run, behind


def causes(refs: Sequence[StreamRef], failed: Iterable[str]) -> list[StreamRef]:
    """The first failed record of each item: the one whose failures count towards parking.

    Later failed records of the same item failed behind it (processors stop an item at its
    first failure to keep its events in order); they are charged nothing.
    """
    failed_set = set(failed)
    seen: set[tuple[str, str]] = set()
    first: list[StreamRef] = []
    for ref in refs:
        if ref.sequence in failed_set and ref.item not in seen:
            seen.add(ref.item)
            first.append(ref)
    return first


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a processed batch's failures."""

    park: list[tuple[StreamRef, Reason]]  # in stream order
    report: list[str]  # sequence numbers to report in batchItemFailures, in stream order


def decide(
    refs: Sequence[StreamRef], failed: Iterable[str], attempts: Mapping[str, int], park_after: int = PARK_AFTER
) -> Decision:
    """Park or report each failed item.

    An item whose first failed record has failed `park_after` deliveries is parked from that
    record on: the record itself (FAILED) and every later record of the item in the batch
    (BEHIND), even one its processor applied, so that none overtakes it; the shard moves on.
    Any other item with a failure is reported from its first failed record on, so Lambda
    redelivers them together, in order. Failures the batch does not contain are reported.
    """
    failed_list = list(failed)
    first = {ref.item: ref for ref in causes(refs, failed_list)}
    parking = {item for item, ref in first.items() if attempts.get(ref.sequence, 0) >= park_after}
    park: list[tuple[StreamRef, Reason]] = []
    report: list[str] = []
    started: set[tuple[str, str]] = set()
    for ref in refs:
        cause = first.get(ref.item)
        if cause is None:
            continue
        if ref is cause:
            started.add(ref.item)
        if ref.item not in started:
            continue  # applied before the item's first failure
        if ref.item in parking:
            park.append((ref, Reason.FAILED if ref is cause else Reason.BEHIND))
        else:
            report.append(ref.sequence)
    known = {ref.sequence for ref in refs}
    report += [sequence for sequence in dict.fromkeys(failed_list) if sequence not in known]
    return Decision(park=park, report=report)


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """A parked stream record as the redrive and the operators' listing see it."""

    tenant: str
    source: str
    entity: str
    sequence: str
    reason: Reason
    state: ParkedState
    attempts: int
    parked_at: str
    action: str | None = None
    first_error: str | None = None
    last_error: str | None = None
    replayed_at: str | None = None
    record: Mapping[str, Any] | None = None  # the full Lambda record (not loaded for listings)

    def view(self) -> dict[str, Any]:
        """The operators' view: everything but the record's content."""
        return {
            "source": self.source,
            "entity": self.entity,
            "sequence": self.sequence,
            "action": self.action,
            "reason": self.reason.value,
            "state": self.state.value,
            "attempts": self.attempts,
            "first_error": self.first_error,
            "last_error": self.last_error,
            "parked_at": self.parked_at,
            "replayed_at": self.replayed_at,
        }


def action_of(record: Mapping[str, Any]) -> str | None:
    """The item's `event_action` in a stream record's new image (e.g. order.refunded), if any."""
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    action = _scalar(image.get("event_action"))
    return action or None
