"""Replay stream records parked after repeated failures (what the `redrive_parked` schedule does),
or move dead-lettered queue messages back to their queue.

    python -m devtools.redrive                                  # every tenant, every source
    python -m devtools.redrive --tenant wx1234567890abcdef --source orders
    python -m devtools.redrive --list [--tenant T] [--source S] [--replayed] [--content]
    python -m devtools.redrive --queue jobs|payouts [--max N]   # dead-letter queue -> queue

Each item's parked records are replayed in stream order through the processor of the stream
that parked them; one that fails again stays parked (one attempt more) with the item's later
records behind it. Replayed records are kept as history. The app's environment (TABLE_PREFIX,
and DYNAMODB_ENDPOINT locally or AWS credentials in the cloud) says where.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from chalicelib.parking import SOURCES, ParkedState


def list_parked(tenants: list[str], source: str | None, state: ParkedState, content: bool) -> list[dict[str, Any]]:
    """Parked (or replayed) records of these tenants, oldest parking first, optionally with their content."""
    from chalicelib.store import get_store

    store = get_store().parked
    rows: list[dict[str, Any]] = []
    for tenant in tenants:
        cursor = None
        while True:
            page = store.page(tenant, state, source, cursor, 100)
            for parked in page.items:
                row = {"tenant": tenant, **parked.view()}
                if content:
                    records = store.waiting_records(tenant, parked.source, parked.entity)
                    row["record"] = next((r.record for r in records if r.sequence == parked.sequence), None)
                rows.append(row)
            cursor = page.next_cursor
            if cursor is None:
                break
    return rows


# --- dead-lettered queue messages -----------------------------------------------------------

QUEUES = ("jobs", "payouts")
RUNNER_STATE = Path(__file__).resolve().parents[1] / ".local" / "runner"  # make run's event runner
DEFAULT_MAX = 1000


def redrive_sqs(sqs: Any, source_url: str, limit: int) -> dict[str, Any]:
    """Move up to `limit` messages from the dead-letter queue named by the source queue's
    RedrivePolicy back to the source queue: each batch is sent before it is deleted, so a crash
    in between repeats a message (every consumer here is idempotent) and never loses one."""
    attributes = sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    if "RedrivePolicy" not in attributes:
        raise SystemExit(f"{source_url} has no dead-letter queue (no RedrivePolicy)")
    dlq_arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    _, _, _, _, account, name = dlq_arn.split(":", 5)
    dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    moved = 0
    while moved < limit:
        received = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - moved),
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            break
        entries = [
            {
                "Id": str(i),
                "MessageBody": m["Body"],
                **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {}),
            }
            for i, m in enumerate(received)
        ]
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        done = {s["Id"] for s in sent.get("Successful", [])}
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(received)
                    if str(i) in done
                ],
            )
        moved += len(done)
        if len(done) < len(received):  # the rest reappear in the dead-letter queue after 60 s
            break
    return {"queue": source_url, "dead_letter_queue": dlq_url, "moved": moved}


def redrive_local(state_dir: Path, spool_dir: Path, queue: str, limit: int) -> dict[str, Any]:
    """The local stack's counterpart: the event runner parks a message that keeps failing in
    `<state_dir>/dlq/<handler>.jsonl`; up to `limit` parked messages of `queue` are spooled back
    to `<spool_dir>/<queue>/` (where the runner takes new messages from) and leave the file.
    The file is claimed by renaming it first, so a message the runner parks meanwhile starts a
    new file instead of being lost; the entries left are appended back to it."""
    from chalicelib.store.queue import spool

    moved = 0
    for path in sorted((state_dir / "dlq").glob("*.jsonl")):
        claimed = path.with_name(f".{path.stem}.{os.getpid()}.redrive")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue
        keep: list[str] = []
        bodies: list[dict[str, Any]] = []
        for line in claimed.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else None
            record = (entry or {}).get("record") or {}
            ours = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] == queue and "body" in record
            if ours and moved + len(bodies) < limit:
                bodies.append(json.loads(record["body"]))
            elif line.strip():
                keep.append(line)
        if bodies:
            spool(spool_dir, queue, bodies)
            moved += len(bodies)
        if keep:
            with path.open("a", encoding="utf-8") as handle:
                handle.write("".join(f"{line}\n" for line in keep))
        claimed.unlink()
    return {"queue": queue, "dead_letter_dir": str(state_dir / "dlq"), "moved": moved}


def redrive_queue(queue: str, limit: int, state_dir: Path) -> dict[str, Any]:
    """Redrive `queue`'s dead letters where the app's settings point: SQS when its queue URL is
    set, else the local spool (`LOCAL_QUEUE_DIR`, the runner's state in `state_dir`)."""
    from chalicelib.settings import get_settings

    settings = get_settings()
    url = {"jobs": settings.jobs_queue_url, "payouts": settings.payout_queue_url}[queue]
    if url:
        import boto3

        return redrive_sqs(boto3.client("sqs", region_name=settings.aws_region), url, limit)
    if settings.local_queue_dir:
        return redrive_local(state_dir, Path(settings.local_queue_dir), queue, limit)
    setting = {"payouts": "PAYOUT_QUEUE_URL", "jobs": "JOBS_QUEUE_URL"}[queue]
    raise SystemExit(f"no queue configured: set {setting} (AWS) or LOCAL_QUEUE_DIR (local stack)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.redrive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", help="only this tenant (appid); default every tenant")
    parser.add_argument("--source", choices=SOURCES, help="only records of this stream")
    parser.add_argument("--list", action="store_true", help="show parked records, replay nothing")
    parser.add_argument("--replayed", action="store_true", help="with --list: show replayed records instead")
    parser.add_argument("--content", action="store_true", help="with --list: include each waiting record's content")
    parser.add_argument("--queue", choices=QUEUES, help="move this queue's dead-lettered messages back to it")
    parser.add_argument("--max", type=int, default=DEFAULT_MAX, help=f"with --queue: at most N (default {DEFAULT_MAX})")
    parser.add_argument(
        "--state-dir", type=Path, default=RUNNER_STATE, help="with --queue, locally: the event runner's state"
    )
    args = parser.parse_args(argv)
    if args.queue:
        print(json.dumps(redrive_queue(args.queue, max(args.max, 0), args.state_dir)))
        return 0

    from chalicelib.clock import utcnow
    from chalicelib.services import parking
    from chalicelib.store import get_store

    if args.list:
        tenants = [args.tenant] if args.tenant else [t.id for t in get_store().tenants.all()]
        state = ParkedState.REPLAYED if args.replayed else ParkedState.PARKED
        for row in list_parked(tenants, args.source, state, args.content):
            print(json.dumps(row, ensure_ascii=False, default=str))
        return 0
    actor = f"cli:{getpass.getuser()}"
    summary = parking.redrive_all(utcnow(), tenant=args.tenant, source=args.source, actor=actor)
    print(json.dumps(summary))
    return 1 if summary["failed_again"] else 0


if __name__ == "__main__":
    sys.exit(main())
