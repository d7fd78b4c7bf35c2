"""Users table stream: when a user's upline changes, their downline follows (one level per hop)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib.observability import count, logger
from chalicelib.services import referrals

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def upline_changed(record: DynamoDBRecord) -> tuple[str, str] | None:
    """(tenant, user id) when this change moved the user's upline, else None."""
    if record.dynamodb is None or record.event_name is None or record.event_name.name != "MODIFY":
        return None
    new = record.dynamodb.new_image or {}
    old = record.dynamodb.old_image or {}
    if list(new.get("upline") or []) == list(old.get("upline") or []):
        return None
    tenant, uid = new.get("tenant"), new.get("uid")
    if not isinstance(tenant, str) or not isinstance(uid, str):
        raise ValueError("user record without tenant or uid")
    return tenant, uid


def record_handler(record: DynamoDBRecord) -> None:
    changed = upline_changed(record)
    if changed is None:
        return
    moved = referrals.propagate(*changed)
    if moved:
        count("UplinesPropagated", moved)
        logger.info("downline moved", extra={"tenant": changed[0], "user": changed[1], "children": moved})


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
