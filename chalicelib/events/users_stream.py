"""Users table stream: audit every version of a user, validate new parent edges (cycles,
stale uplines), and move the downline of a moved user.

The batch runs under the parking rules (chalicelib/parking.py). A user's versions apply in
order: once one fails, the user's later records in the batch fail behind it unprocessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib.events import parking
from chalicelib.observability import count, logger
from chalicelib.parking import ref_of
from chalicelib.services import referrals
from chalicelib.store import get_store

SOURCE = "users"

# A batch whose every record failed is reported like any other (the parking rules count it).


def _processor() -> BatchProcessor:
    """A processor per batch: Powertools keeps a batch's state on the processor, and batches of
    one process may run at once (the local runner's ParallelizationFactor, tests)."""
    return BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


class EarlierVersionFailed(Exception):
    """An earlier record of the same user failed in this batch: this one waits behind it."""


def _images(record: DynamoDBRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    if record.dynamodb is None:
        raise ValueError("stream record without a dynamodb section")
    return dict(record.dynamodb.new_image or {}), dict(record.dynamodb.old_image or {})


def new_version(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """True when this change produced a new audited version of the user."""
    return bool(new.get("version")) and new.get("version") != old.get("version") and bool(new.get("event_at"))


def upline_changed(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return bool(old) and bool(new) and list(new.get("upline") or []) != list(old.get("upline") or [])


def record_handler(record: DynamoDBRecord) -> None:
    new, old = _images(record)
    if not new:  # a removal: users are never deleted by the app
        return
    tenant, uid = new.get("tenant"), new.get("uid")
    if not isinstance(tenant, str) or not isinstance(uid, str):
        raise ValueError("user record without tenant or uid")
    if new_version(new, old) and get_store().audit.append_user_event(tenant, uid, new, old):
        count("AuditRecords")
    if upline_changed(new, old):
        upline = tuple(str(x) for x in (new.get("upline") or ()))
        previous = tuple(str(x) for x in (old.get("upline") or ()))
        if upline[:1] != previous[:1] and not referrals.validate(tenant, uid, upline):
            count("BindingsReverted")
            return  # the revert is a change of its own and propagates when it arrives
        moved = referrals.propagate(tenant, uid)
        if moved:
            count("UplinesPropagated", moved)
            logger.info("downline moved", extra={"tenant": tenant, "user": uid, "children": moved})


def process_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply some user records (a stream batch, or a parked record replayed); Lambda's partial
    response, each failure with the error that caused it as its `reason`."""
    failed_users: set[tuple[str, str]] = set()
    reasons: dict[str, str] = {}

    def in_order(record: DynamoDBRecord) -> None:
        ref = ref_of(record.raw_event)
        try:
            if ref.item in failed_users:
                raise EarlierVersionFailed(f"an earlier record of {ref.entity} failed")
            record_handler(record)
        except Exception as exc:
            failed_users.add(ref.item)
            reasons[ref.sequence] = f"{type(exc).__name__}: {exc}"
            raise

    response = process_partial_response(
        event={"Records": list(records)}, record_handler=in_order, processor=_processor()
    )
    failed = [str(f["itemIdentifier"]) for f in response.get("batchItemFailures") or []]
    failures = [{"itemIdentifier": sequence, "reason": reasons.get(sequence, "")} for sequence in failed]
    return {"batchItemFailures": failures}


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return parking.process(SOURCE, event.get("Records") or [], process_records)
