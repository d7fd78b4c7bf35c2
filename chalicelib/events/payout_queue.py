"""The payout queue: one message per approved withdrawal, sent as one WeChat transfer bill.

A message that fails (an unclear WeChat answer, a throttled table) is reported alone in
`batchItemFailures` and comes back after the visibility timeout; after five receives SQS
moves it to the dead-letter queue, and the reconciliation schedule still finishes the
withdrawal (it queries every bill in flight).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.observability import logger
from chalicelib.services import payouts

processor = BatchProcessor(event_type=EventType.SQS)


def parse(body: str) -> tuple[str, str, str]:
    """(tenant, withdrawal id, run id) of a payout message, or ValueError."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("a payout message must be a JSON object")
    fields = tuple(data.get(k) for k in ("tenant", "withdrawal", "run"))
    if not all(isinstance(f, str) and f for f in fields):
        raise ValueError("a payout message needs tenant, withdrawal and run")
    tenant, withdrawal, run = (str(f) for f in fields)
    return tenant, withdrawal, run


def record_handler(record: SQSRecord) -> None:
    tenant, withdrawal, run = parse(record.body)
    state = payouts.send(tenant, withdrawal, run)
    logger.info("payout message", extra={"withdrawal": withdrawal, "run": run, "state": state})


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
