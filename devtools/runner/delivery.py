"""Delivery: how one job's records or messages reach its handler, the way Lambda would.

Each invocation gets a Lambda-shaped event and context. ``batchItemFailures`` is honoured
(streams redeliver from the first failed record, queues exactly the failed messages); a raising
handler is retried, then the batch is bisected; a record that keeps failing is parked in
``<state_dir>/dlq/<handler name>.jsonl``. :class:`Delivery` is the base the stream and queue
parts of :class:`~devtools.runner.EventRunner` build on.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalice.app import Chalice

from devtools.runner.discovery import Job

logger = logging.getLogger("runner")

ACCOUNT_ID = "000000000000"

Commit = Callable[[list["_Item"]], None]


def _utc_now_iso() -> str:
    """Return the current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (CloudWatch style)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LocalLambdaContext:
    """A LambdaContext look-alike passed to handlers."""

    function_name: str
    invoked_function_arn: str
    log_group_name: str
    log_stream_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_ms: int = 60_000
    identity: Any = None
    client_context: Any = None
    _started: float = field(default_factory=time.monotonic, repr=False)

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the (notional) Lambda timeout."""
        elapsed_ms = int((time.monotonic() - self._started) * 1000)
        return max(0, self.timeout_ms - elapsed_ms)


@dataclass(eq=False)
class _Item:
    """One record or message under delivery; ``attempts`` counts invocations that carried it."""

    id: str
    record: dict[str, Any]
    attempts: int = 0
    strikes: int = 0  # failures reported for this item via batchItemFailures


@dataclass
class _Outcome:
    """Result of one invocation: ``failed`` None means the whole batch failed."""

    failed: list[_Item] | None
    error: str = ""


class Delivery:
    """Invokes a job's handler with batches until every record succeeded or was parked."""

    app: Chalice
    stage: str
    region: str
    state_dir: Path
    max_retries: int
    _park_lock: threading.Lock

    def _function_name(self, job: Job) -> str:
        """Return the Lambda function name Chalice would deploy for ``job``."""
        return f"{self.app.app_name}-{self.stage}-{job.name}"

    def _context(self, job: Job) -> LocalLambdaContext:
        """Build a fresh Lambda context for one invocation of ``job``."""
        name = self._function_name(job)
        day = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
        return LocalLambdaContext(
            function_name=name,
            invoked_function_arn=f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}",
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name=f"{day}/[$LATEST]{uuid.uuid4().hex}",
        )

    def _deliver(self, job: Job, items: list[_Item], commit: Commit) -> None:
        """Deliver ``items`` until each succeeded or was parked; ``commit`` gets finished items in order.

        Reported failures (batchItemFailures) count against the failed item; a raising handler
        is retried ``max_retries`` times, then the batch is bisected until the poison is alone.
        """
        batch = list(items)
        tries = 0
        while batch:
            outcome = self._invoke(job, batch)
            if outcome.failed is not None:
                batch, progressed = self._settle(job, batch, outcome, commit)
                tries = 0 if progressed else tries
                continue
            tries += 1
            if tries >= self.max_retries:
                self._split_or_park(job, batch, outcome.error, commit)
                return

    def _split_or_park(self, job: Job, batch: list[_Item], error: str, commit: Commit) -> None:
        """After repeated whole-batch failures: park a lone record, or bisect and deliver each half."""
        if len(batch) == 1:
            self._park(job, batch[0], error)
            commit(batch)
            return
        middle = (len(batch) + 1) // 2
        logger.warning("bisect %s: %d -> %d + %d record(s)", job.name, len(batch), middle, len(batch) - middle)
        self._deliver(job, batch[:middle], commit)
        self._deliver(job, batch[middle:], commit)

    def _settle(self, job: Job, batch: list[_Item], outcome: _Outcome, commit: Commit) -> tuple[list[_Item], bool]:
        """Apply a (possibly empty) failure report; return what to redeliver and whether anything finished.

        Streams keep order: everything from the first failed record on is redelivered and only
        that record is charged. Queues redeliver exactly the failed messages.
        """
        failed = outcome.failed or []
        if job.kind == "dynamodb":
            first = batch.index(failed[0]) if failed else len(batch)
            done, failed = batch[:first], batch[first:]
            charged = failed[:1]
        else:
            failed_ids = {id(item) for item in failed}
            done = [item for item in batch if id(item) not in failed_ids]
            charged = failed
        commit(done)
        for item in charged:
            item.strikes += 1
        parked = [item for item in charged if item.strikes >= self.max_retries]
        for item in parked:
            self._park(job, item, outcome.error)
        commit(parked)
        parked_ids = {id(item) for item in parked}
        return [item for item in failed if id(item) not in parked_ids], bool(done or parked)

    def _event_for(self, job: Job, batch: list[_Item]) -> dict[str, Any]:
        """Build the Lambda event for one invocation (a deep copy, so handlers cannot mutate state)."""
        records = []
        for item in batch:
            record = json.loads(json.dumps(item.record))
            if job.kind == "sqs":
                record["receiptHandle"] = base64.b64encode(uuid.uuid4().bytes).decode("ascii")
                record["attributes"]["ApproximateReceiveCount"] = str(item.attempts)
            records.append(record)
        return {"Records": records}

    def _invoke(self, job: Job, batch: list[_Item]) -> _Outcome:
        """Call the handler once with ``batch``; translate its result or exception into an outcome."""
        for item in batch:
            item.attempts += 1
        event = self._event_for(job, batch)
        logger.info("deliver %s: %d record(s)", job.name, len(batch))
        try:
            result = job.handler(event, self._context(job))
        except Exception as exc:
            logger.warning("%s raised %s: %s", job.name, type(exc).__name__, exc)
            return _Outcome(None, "".join(traceback.format_exception(exc)).strip())
        return _parse_response(job, result, batch)

    def _park(self, job: Job, item: _Item, error: str) -> None:
        """Append a record that keeps failing, with the error, to ``<state_dir>/dlq/<name>.jsonl``."""
        path = self.state_dir / "dlq" / f"{job.name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "handler": job.name,
            "functionName": self._function_name(job),
            "source": job.kind,
            "id": item.id,
            "attempts": item.attempts,
            "error": error,
            "parkedAt": _utc_now_iso(),
            "record": item.record,
        }
        with self._park_lock, path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
        logger.error("park %s: %s after %d attempt(s) -> %s", job.name, item.id, item.attempts, path)


def _parse_response(job: Job, result: Any, batch: list[_Item]) -> _Outcome:
    """Read ``batchItemFailures`` like Lambda: unknown or empty identifiers fail the whole batch."""
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not failures:
        return _Outcome([])
    by_id = {item.id: item for item in batch}
    ids = [entry.get("itemIdentifier") if isinstance(entry, dict) else None for entry in failures]
    if any(ident not in by_id for ident in ids):
        logger.warning("%s returned batchItemFailures with unknown identifiers %s", job.name, ids)
        return _Outcome(None, f"invalid batchItemFailures (unknown itemIdentifier): {ids}")
    wanted = set(ids)
    failed = [item for item in batch if item.id in wanted]
    logger.info("%s reported %d failed record(s)", job.name, len(failed))
    return _Outcome(failed, "reported by the handler in batchItemFailures")
