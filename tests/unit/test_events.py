"""The event builders (tests/events.py) build what Powertools, and so our handlers, accept."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent, EventBridgeEvent, SQSEvent
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecordEventName
from aws_lambda_powertools.utilities.parser.models import (
    DynamoDBStreamRecordModel,
    EventBridgeModel,
    SqsRecordModel,
)

from chalicelib import parking
from chalicelib.parking import StreamRef, ref_of
from tests import events

TENANT = "wxunit0000000001"


def test_an_order_record_carries_keys_images_and_sequence_in_lambdas_shape() -> None:
    # Given an order that moved from created to paid
    record = events.order_record(
        TENANT, "o-1", {"status": "paid", "amount_fen": 5_000}, {"status": "created"}, sequence=1200
    )
    # Then the record has Lambda's fields and Powertools reads it back as we wrote it
    assert set(record) == events.STREAM_RECORD_FIELDS
    assert record["eventSourceARN"].startswith(f"arn:aws:dynamodb:{events.REGION}:")
    assert f"table/fenxiao-{TENANT}-orders/stream/" in record["eventSourceARN"]
    (parsed,) = DynamoDBStreamEvent(events.stream_event(record)).records
    assert parsed.event_name is DynamoDBRecordEventName.MODIFY
    assert parsed.dynamodb is not None
    assert parsed.dynamodb.keys == {"pk": f"{TENANT}#o-1"}
    assert parsed.dynamodb.new_image == {"pk": f"{TENANT}#o-1", "status": "paid", "amount_fen": 5_000}
    assert parsed.dynamodb.old_image == {"pk": f"{TENANT}#o-1", "status": "created"}
    assert parsed.dynamodb.sequence_number == "1200"
    model = DynamoDBStreamRecordModel.model_validate(record)
    assert model.dynamodb.NewImage == parsed.dynamodb.new_image
    # And the parking rules see the order of the tenant
    assert ref_of(record) == StreamRef(tenant=TENANT, entity=f"{TENANT}#o-1", sequence="1200")


def test_a_user_record_names_its_change_from_its_images() -> None:
    inserted = events.user_record(TENANT, "u-1", {"upline": ["u-0"], "version": 1})
    removed = events.user_record(TENANT, "u-1", old={"uid": "u-1"})
    assert inserted["eventName"] == "INSERT" and "OldImage" not in inserted["dynamodb"]
    assert removed["eventName"] == "REMOVE" and "NewImage" not in removed["dynamodb"]
    assert inserted["dynamodb"]["NewImage"]["upline"] == {"L": [{"S": "u-0"}]}
    assert events.user_record(TENANT, "u-1", {}, name="MODIFY")["eventName"] == "MODIFY"
    assert ":table/fenxiao-" in inserted["eventSourceARN"] and "-users/stream/" in inserted["eventSourceARN"]
    with pytest.raises(ValueError, match="new image, an old image or both"):
        events.user_record(TENANT, "u-1")


def test_sequence_numbers_grow_in_stream_order() -> None:
    first, second = events.order_record(TENANT, "a", {}), events.order_record(TENANT, "b", {})
    numbers = [first["dynamodb"]["SequenceNumber"], second["dynamodb"]["SequenceNumber"]]
    assert sorted(numbers, key=parking.sequence_key) == numbers and numbers[0] != numbers[1]


def test_an_sqs_record_is_what_the_queue_functions_receive() -> None:
    record = events.sqs_record({"tenant": TENANT, "withdrawal": "w-1"}, queue="payouts", receive_count=3)
    assert set(record) == events.SQS_RECORD_FIELDS
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest()
    (parsed,) = SQSEvent(events.sqs_event(record["body"])).records
    assert parsed.json_body == {"tenant": TENANT, "withdrawal": "w-1"}
    assert parsed.event_source_arn.endswith(":payouts")
    model = SqsRecordModel.model_validate(record)
    assert model.attributes.ApproximateReceiveCount == "3"
    assert events.sqs_record("plain text")["body"] == "plain text"


def test_a_scheduled_event_is_eventbridges() -> None:
    at = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
    event = events.scheduled_event("fenxiao-prod-settle", at)
    parsed = EventBridgeEvent(event)
    assert parsed.detail_type == "Scheduled Event" and parsed.source == "aws.events"
    assert parsed.resources == [f"arn:aws:events:{events.REGION}:{events.ACCOUNT}:rule/fenxiao-prod-settle"]
    assert EventBridgeModel.model_validate(event).time == at


def test_a_lambda_context_counts_down_its_time() -> None:
    context = events.lambda_context("fenxiao-prod-on_order_change", timeout_ms=3_000)
    assert context.invoked_function_arn.endswith(":function:fenxiao-prod-on_order_change")
    assert context.log_group_name == "/aws/lambda/fenxiao-prod-on_order_change"
    assert context.aws_request_id.replace("-", "") in context.log_stream_name
    assert 0 < context.get_remaining_time_in_millis() <= 3_000
    context.started -= 10  # ten seconds later
    assert context.get_remaining_time_in_millis() == 0
