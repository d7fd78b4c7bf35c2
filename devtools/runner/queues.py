"""Queues: in-process SQS queues, fed by ``send_message`` and by batch files other processes spool.

Messages are delivered with the same retry and dead-letter rules as stream records
(:mod:`devtools.runner.delivery`), redelivering exactly the failed messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from devtools.runner.delivery import ACCOUNT_ID, Delivery, _Item
from devtools.runner.discovery import Job


class Queues(Delivery):
    """In-process queues of a runner: one deque of messages per queue name."""

    spool_dir: Path | None
    _queues: dict[str, deque[_Item]]
    _queue_lock: threading.Lock

    def send_message(self, queue: str, body: str, message_attributes: dict[str, Any] | None = None) -> str:
        """Put a message on the in-process queue ``queue``; return its message id."""
        message_id = str(uuid.uuid4())
        now_ms = str(int(time.time() * 1000))
        record = {
            "messageId": message_id,
            "receiptHandle": "",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "0",
                "SentTimestamp": now_ms,
                "SenderId": ACCOUNT_ID,
                "ApproximateFirstReceiveTimestamp": now_ms,
            },
            "messageAttributes": message_attributes or {},
            "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{queue}",
            "awsRegion": self.region,
        }
        with self._queue_lock:
            self._queues.setdefault(queue, deque()).append(_Item(message_id, record))
        return message_id

    def take_spooled(self, queue: str) -> int:
        """Move the batch files spooled for ``queue`` onto its in-process queue, oldest first.

        Each file is claimed by renaming it first, so two runners never take the same file.
        """
        if self.spool_dir is None:
            return 0
        folder = self.spool_dir / queue
        if not folder.is_dir():
            return 0
        taken = 0
        for path in sorted(folder.glob("*.json")):
            claimed = path.with_name(f".{path.stem}.{os.getpid()}.taken")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another runner took it
            try:
                bodies = json.loads(claimed.read_text(encoding="utf-8"))
                for body in bodies if isinstance(bodies, list) else [bodies]:
                    self.send_message(queue, json.dumps(body, separators=(",", ":")))
                    taken += 1
            finally:
                claimed.unlink(missing_ok=True)
        return taken

    def _poll_queue(self, job: Job) -> int:
        """Deliver everything waiting on the job's in-process queue; return how many messages."""
        self.take_spooled(str(job.queue))
        queue = self._queues.setdefault(str(job.queue), deque())
        delivered = 0
        while True:
            with self._queue_lock:
                batch = [queue.popleft() for _ in range(min(job.batch_size, len(queue)))]
            if not batch:
                return delivered
            delivered += len(batch)
            self._deliver(job, batch, lambda _done: None)
