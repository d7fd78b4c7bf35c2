"""Event builders: what Lambda hands our event handlers, shaped the way AWS shapes it.

- DynamoDB stream records of the orders and users tables (`order_record`, `user_record`), or of
  any table (`stream_record`), and the event around them (`stream_event`): images are plain Python
  values, serialized to DynamoDB JSON (``{"S": ...}``, ``{"N": ...}``) as the stream delivers them;
- SQS records and their event (`sqs_record`, `sqs_event`), as the queue functions receive them;
- EventBridge scheduled events (`scheduled_event`), as the scheduled jobs receive them;
- a Lambda context (`lambda_context`) with the attributes and the method handlers read.

The field sets are the ones the event runner's contract test checks it produces
(tests/integration/test_runner.py), so a test built on these sees what production sees.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeSerializer

REGION = "ap-shanghai"
ACCOUNT = "000000000000"
STREAM_RECORD_FIELDS = frozenset(
    {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb", "eventSourceARN"}
)
SQS_RECORD_FIELDS = frozenset(
    {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
)

_serializer = TypeSerializer()
_sequence = itertools.count(100_000_000_000_000_000_000)


def dynamodb_json(image: Mapping[str, Any]) -> dict[str, Any]:
    """A plain item as DynamoDB JSON (what a stream image holds): strings S, numbers N, lists L..."""
    return {name: _serializer.serialize(value) for name, value in image.items()}


def next_sequence() -> str:
    """A sequence number larger than every earlier one of this process (stream order)."""
    return str(next(_sequence))


def stream_record(
    table: str,
    keys: Mapping[str, Any],
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    sequence: str | int | None = None,
    at: datetime | None = None,
    region: str = REGION,
) -> dict[str, Any]:
    """One record of a NEW_AND_OLD_IMAGES stream on `table`, as Lambda puts it in the event.

    `keys`, `new` and `old` are plain values; the images include the keys. `name` defaults to what
    the images say: INSERT (new only), MODIFY (both), REMOVE (old only).
    """
    if new is None and old is None:
        raise ValueError("a stream record has a new image, an old image or both")
    sequence = next_sequence() if sequence is None else str(sequence)
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": (at or datetime.now(UTC)).timestamp(),
        "Keys": dynamodb_json(keys),
        "SequenceNumber": sequence,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = dynamodb_json({**new, **keys})
    if old is not None:
        dynamodb["OldImage"] = dynamodb_json({**old, **keys})
    dynamodb["SizeBytes"] = len(json.dumps(dynamodb))
    return {
        "eventID": uuid.uuid5(uuid.NAMESPACE_URL, f"{table}/{sequence}").hex,  # the same on redelivery
        "eventName": name or _event_name(new, old),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}/stream/2026-01-01T00:00:00.000",
    }


def _event_name(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> str:
    if new is None:
        return "REMOVE"
    return "INSERT" if old is None else "MODIFY"


def order_record(
    tenant: str,
    order_id: str,
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A record of the orders table (hash key `tenant#order_id`); options as in `stream_record`."""
    return stream_record(f"fenxiao-{tenant}-orders", {"pk": f"{tenant}#{order_id}"}, new, old, **options)


def user_record(
    tenant: str,
    uid: str,
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A record of the users table (hash key `tenant#uid`); options as in `stream_record`."""
    return stream_record(f"fenxiao-{tenant}-users", {"pk": f"{tenant}#{uid}"}, new, old, **options)


def stream_event(*records: Mapping[str, Any]) -> dict[str, Any]:
    return {"Records": [dict(record) for record in records]}


def sqs_record(
    body: str | Mapping[str, Any],
    queue: str = "payouts",
    *,
    receive_count: int = 1,
    region: str = REGION,
) -> dict[str, Any]:
    """One SQS message as Lambda delivers it; a mapping body is sent as JSON."""
    text = body if isinstance(body, str) else json.dumps(body)
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": text,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": ACCOUNT,
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{region}:{ACCOUNT}:{queue}",
        "awsRegion": region,
    }


def sqs_event(*bodies: str | Mapping[str, Any], queue: str = "payouts") -> dict[str, Any]:
    return {"Records": [sqs_record(body, queue) for body in bodies]}


def scheduled_event(rule: str, at: datetime | None = None, region: str = REGION) -> dict[str, Any]:
    """The EventBridge (CloudWatch Events) event a schedule rule sends its function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


@dataclass
class FakeLambdaContext:
    """The attributes and the one method of Lambda's context object (`LambdaContext`)."""

    function_name: str = "fenxiao-dev-handler"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout_ms: int = 60_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"2026/01/01/[$LATEST]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.timeout_ms - int((time.monotonic() - self.started) * 1000))


def lambda_context(function_name: str = "fenxiao-dev-handler", **fields: Any) -> FakeLambdaContext:
    return FakeLambdaContext(function_name=function_name, **fields)
