"""The payout queue, for senders: SQS in the cloud, a spool directory on the local stack.

Cloud (`PAYOUT_QUEUE_URL` set): `SendMessageBatch`, ten messages a call, entries SQS reports as
failed are sent again a few times. Local (`LOCAL_QUEUE_DIR` set): every batch of up to ten
messages is one JSON file (a list of bodies) in `<dir>/<queue>/`, written under a temporary
name and renamed, so the event runner (`devtools/runner/`) never reads half a file; names
sort in sending order.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from chalicelib.caches import cached
from chalicelib.retry import Retry
from chalicelib.settings import get_settings

BATCH = 10  # SQS's limit per SendMessageBatch
SQS_REFUSALS = Retry(tries=4, first_s=0.05, jitter=0)  # resend what SQS refused: 50, 100, 200, 400 ms
_counter = itertools.count()


def send_batch(queue: str, bodies: list[dict[str, Any]]) -> int:
    """Send every body as one message of `queue`; returns how many were sent."""
    settings = get_settings()
    url = {"payouts": settings.payout_queue_url, "jobs": settings.jobs_queue_url}.get(queue)
    for start in range(0, len(bodies), BATCH):
        chunk = bodies[start : start + BATCH]
        if url:
            _send_sqs(url, chunk)
        elif settings.local_queue_dir:
            spool(Path(settings.local_queue_dir), queue, chunk)
        else:
            setting = {"payouts": "PAYOUT_QUEUE_URL", "jobs": "JOBS_QUEUE_URL"}.get(queue, "a queue URL")
            raise RuntimeError(f"no queue configured: set {setting} (AWS) or LOCAL_QUEUE_DIR (local stack)")
    return len(bodies)


def spool(directory: Path, queue: str, bodies: list[dict[str, Any]]) -> Path:
    """Write one batch file atomically into the local spool of `queue`."""
    folder = directory / queue
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):09d}"
    temporary = folder / f".{name}.tmp"
    temporary.write_text(json.dumps(bodies, separators=(",", ":")), encoding="utf-8")
    final = folder / f"{name}.json"
    os.replace(temporary, final)
    return final


@cached(maxsize=1)
def _sqs() -> Any:
    # function-local: cold start (boto3 loads with the first SQS send)
    import boto3  # type: ignore[import-untyped]

    return boto3.client("sqs", region_name=get_settings().aws_region)


def _send_sqs(url: str, bodies: list[dict[str, Any]]) -> None:
    entries = [{"Id": str(i), "MessageBody": json.dumps(b, separators=(",", ":"))} for i, b in enumerate(bodies)]
    for attempt in SQS_REFUSALS:
        answer = _sqs().send_message_batch(QueueUrl=url, Entries=entries)
        failed = {f["Id"] for f in answer.get("Failed") or []}
        if not failed:
            return
        entries = [e for e in entries if e["Id"] in failed]
        SQS_REFUSALS.pause(attempt)
    raise RuntimeError(f"SQS refused {len(entries)} payout messages after {SQS_REFUSALS.tries - 1} retries")
