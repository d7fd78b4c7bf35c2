"""Users table stream: audit every version of a user, validate new parent edges (cycles,
stale uplines), and move the downline of a moved user."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib.observability import count, logger
from chalicelib.services import referrals

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


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
    from chalicelib.store import get_store

    new, old = _images(record)
    if not new:  # a removal: users are never deleted by the app
        return
    tenant, uid = new.get("tenant"), new.get("uid")
    if not isinstance(tenant, str) or not isinstance(uid, str):
        raise ValueError("user record without tenant or uid")
    if new_version(new, old) and get_store().audit.append_user_event(tenant, uid, new):
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


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
