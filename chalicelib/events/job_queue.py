"""The jobs queue: one message per (scheduled job, tenant), run as an invocation of its own.

A run that fails is reported in `batchItemFailures` and comes back after the visibility
timeout; after five receives SQS moves it to the dead-letter queue (alarmed). Every job is
idempotent and pages through its own tenant's index, so a retried run simply continues.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.observability import logger
from chalicelib.services import jobs


def parse(body: str) -> tuple[str, str]:
    """(job, tenant) of a jobs message, or ValueError."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("a jobs message must be a JSON object")
    job, tenant = data.get("job"), data.get("tenant")
    if not (isinstance(job, str) and job and isinstance(tenant, str) and tenant):
        raise ValueError("a jobs message needs job and tenant")
    return job, tenant


def record_handler(record: SQSRecord) -> None:
    job, tenant = parse(record.body)
    summary = jobs.run_for_tenant(job, tenant, actor=f"system:{job}")
    logger.info("job done", extra={"job": job, "tenant": tenant, "summary": json.dumps(summary, default=str)})


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=BatchProcessor(event_type=EventType.SQS), context=context
    )
    return dict(response)
