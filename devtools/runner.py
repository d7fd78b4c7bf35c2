"""Local event runner: drives a Chalice app's stream, schedule and queue handlers.

``chalice local`` serves HTTP only. This runner discovers every event handler from the app
object itself (``app.event_sources`` + ``app.handler_map``) and calls them the way Lambda
would, against DynamoDB Local:

* DynamoDB stream handlers: the table name inside the decorator's ARN (``table/<logical>/``)
  is mapped to a local table with ``table_name_for``; its stream is read shard by shard and
  delivered in Lambda-shaped batches. ``batchItemFailures`` is honoured (redelivery from the
  first failed record), a raising handler is retried, then the batch is bisected; a record
  that keeps failing is parked in ``<state_dir>/dlq/<handler name>.jsonl`` and never blocks
  the shard. Checkpoints persist in ``<state_dir>/checkpoints.json``.
* Parallelization, as Lambda's ``ParallelizationFactor`` N: each shard's records are spread
  over N lanes by the hash of their partition key (the item's hash key), and the lanes run
  their batches at the same time, one batch in flight per lane. Records of one item stay in
  one lane, in order; retries, bisection and parking happen inside the lane, so a failing
  item holds up only its own lane. The shard's checkpoint is the end of the prefix every
  lane has finished. N comes from the app's merge template (``infra/merge-prod.json`` next
  to the app's module, ``ParallelizationFactor`` of the handler's event source), default 1,
  or from the constructor. Handlers then run in threads of one process: module-level state
  that Lambda would keep per execution environment is shared between concurrent batches.
* Schedules: fired with a CloudWatch scheduled event, on demand (:meth:`EventRunner.fire_schedule`)
  or periodically in :meth:`EventRunner.run_forever`.
* SQS handlers: an in-process queue (:meth:`EventRunner.send_message`) with the same
  retry and dead-letter rules.

CLI: ``python -m devtools.runner --app-dir . [--once|--drain] [--job NAME] [--schedule-interval S]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from chalice.app import (
    BaseEventSourceConfig,
    Chalice,
    DynamoDBEventConfig,
    ScheduledEventConfig,
    ScheduleExpression,
    SQSEventConfig,
)
from chalice.utils import to_cfn_resource_name

from devtools.ddb_local import local_client

logger = logging.getLogger("runner")

ACCOUNT_ID = "000000000000"
DEFAULT_STATE_DIR = Path(".local/runner")
INFRA_TEMPLATE = Path("infra") / "merge-prod.json"  # relative to the app's directory
MAX_PAGE = 1000  # GetRecords' own limit
MAX_ROUND = 10_000  # stream records read ahead before the lanes start on them
CRON_INTERVAL = 3600.0
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
_IMAGE_KEYS = ("Keys", "NewImage", "OldImage")
_RECORD_ORDER = ("eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb")

Handler = Callable[[dict[str, Any], Any], Any]
Commit = Callable[[list["_Item"]], None]


# --------------------------------------------------------------------------- helpers


def schedule_interval_seconds(expression: str | ScheduleExpression) -> float:
    """Return the local firing interval of a schedule expression.

    ``rate(N minute(s)|hour(s)|day(s))`` maps to its period; ``cron(...)`` (and anything
    else) fires once an hour locally.
    """
    text = expression.to_string() if isinstance(expression, ScheduleExpression) else str(expression)
    match = _RATE.match(text.strip())
    if match is None:
        return CRON_INTERVAL
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def logical_table_from_arn(stream_arn: str) -> str:
    """Return the table name inside a DynamoDB (stream) ARN: ``...:table/<name>/stream/...``."""
    resource = stream_arn.split(":", 5)[-1]
    parts = resource.split("/")
    if len(parts) < 2 or parts[0] != "table" or not parts[1]:
        raise ValueError(f"not a DynamoDB table/stream ARN: {stream_arn!r}")
    return parts[1]


def parallelization_factors(template: Path) -> dict[str, int]:
    """Return ``{resource logical id: ParallelizationFactor}`` of a merge template's stream event sources.

    Chalice names a handler ``on_order_change``'s resource ``OnOrderChange``; the merge template
    sets ``Resources.OnOrderChange.Properties.Events.<...>.Properties.ParallelizationFactor``.
    """
    resources = json.loads(template.read_text(encoding="utf-8")).get("Resources") or {}
    factors: dict[str, int] = {}
    for logical_id, resource in resources.items():
        events = ((resource or {}).get("Properties") or {}).get("Events") or {}
        for source in events.values():
            factor = ((source or {}).get("Properties") or {}).get("ParallelizationFactor")
            if isinstance(factor, int) and factor >= 1:
                factors[logical_id] = max(factor, factors.get(logical_id, 1))
    return factors


def app_infra_template(app: Chalice) -> Path | None:
    """Return ``infra/merge-prod.json`` beside the module defining one of the app's event handlers, if any."""
    for cfg in app.event_sources:
        handler = app.handler_map.get(cfg.name)
        func = getattr(handler, "func", handler)  # Chalice wraps event handlers (EventSourceHandler.func)
        module = sys.modules.get(getattr(func, "__module__", "") or "")
        source = getattr(module, "__file__", None)
        template = Path(source).resolve().parent / INFRA_TEMPLATE if source else None
        if template is not None and template.is_file():
            return template
    return None


def partition_lane(keys: Mapping[str, Any], hash_key: str | None, lanes: int) -> int:
    """Return the lane (0..lanes-1) of a stream record: a stable hash of its item's hash key.

    Without a known hash key attribute, the whole primary key is the partition key.
    """
    if lanes <= 1:
        return 0
    value = keys.get(hash_key) if hash_key else None
    text = json.dumps(value if value is not None else keys, sort_keys=True, default=str)
    return zlib.crc32(text.encode("utf-8")) % lanes


def _utc_now_iso() -> str:
    """Return the current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (CloudWatch style)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_seconds(value: Any) -> Any:
    """Convert a datetime to epoch seconds (int when whole, as Lambda sends); pass others through."""
    if not isinstance(value, dt.datetime):
        return value
    seconds = value.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


def _encode_value(value: dict[str, Any]) -> dict[str, Any]:
    """Return a DynamoDB JSON attribute value with binaries base64-encoded (wire form)."""
    if "B" in value:
        return {"B": _b64(value["B"])}
    if "BS" in value:
        return {"BS": [_b64(item) for item in value["BS"]]}
    if "M" in value:
        return {"M": {key: _encode_value(item) for key, item in value["M"].items()}}
    if "L" in value:
        return {"L": [_encode_value(item) for item in value["L"]]}
    return value


def _b64(raw: bytes | str) -> str:
    """Base64-encode bytes (strings are assumed to be encoded already)."""
    return raw if isinstance(raw, str) else base64.b64encode(raw).decode("ascii")


def _client_error_code(exc: ClientError) -> str:
    """Return the error code of a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code", ""))


# --------------------------------------------------------------------------- model


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


@dataclass
class Job:
    """One discovered event handler."""

    name: str
    kind: str  # "dynamodb" | "schedule" | "sqs"
    handler: Handler
    config: BaseEventSourceConfig
    batch_size: int = 1
    logical_table: str | None = None
    schedule: str | None = None
    interval: float | None = None
    queue: str | None = None
    parallelization: int = 1
    hash_key: str | None = None  # the stream table's hash key attribute, once described


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


class _Progress:
    """The finished prefix of a round of stream records, in shard order, over concurrent lanes.

    Lanes report their finished (processed or parked) records in any order; ``save`` gets
    the sequence number of the last record of the prefix that is finished everywhere.
    """

    def __init__(self, items: list[_Item], save: Callable[[str], None]) -> None:
        self._items = items
        self._save = save
        self._finished: set[int] = set()
        self._next = 0
        self._lock = threading.Lock()

    def commit(self, done: list[_Item]) -> None:
        """Mark ``done`` finished and save the checkpoint if the finished prefix grew."""
        with self._lock:
            self._finished.update(id(item) for item in done)
            start = self._next
            while self._next < len(self._items) and id(self._items[self._next]) in self._finished:
                self._next += 1
            if self._next > start:
                self._save(self._items[self._next - 1].id)


class CheckpointStore:
    """Per-handler, per-shard stream checkpoints persisted as JSON.

    Layout: ``{"streams": {handler: {"streamArn": arn, "shards": {shard: {"sequenceNumber",
    "finished"}}}}}``. A different stream ARN (table recreated) resets the handler's shards.
    """

    def __init__(self, path: Path) -> None:
        """Load checkpoints from ``path`` (missing or unreadable file: start empty)."""
        self.path = path
        self._data: dict[str, Any] = {"streams": {}}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict) and isinstance(loaded.get("streams"), dict):
                self._data = loaded

    def shard(self, handler: str, stream_arn: str, shard_id: str) -> dict[str, Any]:
        """Return the mutable state of one shard for one handler."""
        streams = self._data["streams"]
        entry = streams.get(handler)
        if entry is None or entry.get("streamArn") != stream_arn:
            entry = streams[handler] = {"streamArn": stream_arn, "shards": {}}
        state: dict[str, Any] = entry["shards"].setdefault(shard_id, {"sequenceNumber": None, "finished": False})
        return state

    def save(self) -> None:
        """Write checkpoints atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        tmp.replace(self.path)


# --------------------------------------------------------------------------- discovery


def _stream_job(cfg: DynamoDBEventConfig, handler: Handler, batch_size: int | None) -> Job:
    """Build a job for a DynamoDB stream handler."""
    return Job(
        name=cfg.name,
        kind="dynamodb",
        handler=handler,
        config=cfg,
        batch_size=batch_size or cfg.batch_size,
        logical_table=logical_table_from_arn(cfg.stream_arn),
    )


def _schedule_job(cfg: ScheduledEventConfig, handler: Handler, interval: float | None) -> Job:
    """Build a job for a scheduled handler."""
    expr = cfg.schedule_expression
    text = expr.to_string() if isinstance(expr, ScheduleExpression) else str(expr)
    return Job(
        name=cfg.name,
        kind="schedule",
        handler=handler,
        config=cfg,
        schedule=text,
        interval=interval or schedule_interval_seconds(text),
    )


def _sqs_job(cfg: SQSEventConfig, handler: Handler, batch_size: int | None) -> Job:
    """Build a job for an SQS handler (queue name from ``queue`` or the tail of ``queue_arn``)."""
    queue = cfg.queue or str(cfg.queue_arn).rsplit(":", 1)[-1]
    return Job(
        name=cfg.name,
        kind="sqs",
        handler=handler,
        config=cfg,
        batch_size=batch_size or cfg.batch_size,
        queue=queue,
    )


def discover_jobs(app: Chalice, batch_size: int | None = None, schedule_interval: float | None = None) -> list[Job]:
    """Return the stream, schedule and SQS handlers registered on ``app`` (others are skipped)."""
    jobs: list[Job] = []
    for cfg in app.event_sources:
        handler = app.handler_map[cfg.name]
        if isinstance(cfg, DynamoDBEventConfig):
            jobs.append(_stream_job(cfg, handler, batch_size))
        elif isinstance(cfg, ScheduledEventConfig):
            jobs.append(_schedule_job(cfg, handler, schedule_interval))
        elif isinstance(cfg, SQSEventConfig):
            jobs.append(_sqs_job(cfg, handler, batch_size))
        else:
            logger.debug("skip %s: %s is not run locally", cfg.name, type(cfg).__name__)
    return jobs


# --------------------------------------------------------------------------- runner


class EventRunner:
    """Polls local streams, fires schedules and drains in-process queues for a Chalice app."""

    def __init__(
        self,
        app: Chalice,
        table_name_for: Callable[[str], str],
        endpoint_url: str,
        state_dir: Path,
        schedule_interval: float | None = None,
        max_retries: int = 3,
        batch_size: int | None = None,
        region: str = "us-east-1",
        only: Collection[str] | None = None,
        stage: str = "local",
        spool_dir: Path | None = None,
        notifications: Callable[[], int] | None = None,
        parallelization: int | Mapping[str, int] | None = None,
        infra_template: Path | None = None,
    ) -> None:
        """Discover the app's handlers (optionally ``only`` those named) and open local clients.

        ``max_retries`` is the number of failed attempts after which a record is parked in
        the dead-letter file; ``batch_size`` overrides the decorators' batch sizes; messages
        other processes spool under ``spool_dir/<queue>/`` (``chalicelib.queue``) join the
        in-process queues on every poll.

        ``parallelization`` is the number of concurrent batches per shard of every stream
        handler (an int) or of the handlers named (a mapping); the others take the
        ``ParallelizationFactor`` of ``infra_template`` (default: ``infra/merge-prod.json``
        beside the app's module, when there is one), else 1.
        """
        self.app = app
        self.table_name_for = table_name_for
        self.endpoint_url = endpoint_url
        self.state_dir = Path(state_dir)
        self.max_retries = max(1, max_retries)
        self.region = region
        self.stage = stage
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self.notifications = notifications
        jobs = discover_jobs(app, batch_size, schedule_interval)
        if only:
            unknown = set(only) - {job.name for job in jobs}
            if unknown:
                raise KeyError(f"unknown handler(s): {', '.join(sorted(unknown))}")
            jobs = [job for job in jobs if job.name in only]
        self.jobs = jobs
        self._set_parallelization(parallelization, infra_template)
        self._ddb = local_client("dynamodb", endpoint_url, region)
        self._streams = local_client("dynamodbstreams", endpoint_url, region)
        self._checkpoints = CheckpointStore(self.state_dir / "checkpoints.json")
        self._queues: dict[str, deque[_Item]] = {}
        self._queue_lock = threading.Lock()
        self._poll_lock = threading.RLock()  # one delivery pass at a time (run_forever and drain may overlap)
        self._warned: set[str] = set()
        self._park_lock = threading.Lock()

    def _set_parallelization(self, given: int | Mapping[str, int] | None, template: Path | None) -> None:
        """Set each stream job's number of concurrent batches per shard (see ``__init__``)."""
        template = template or app_infra_template(self.app)
        from_infra = parallelization_factors(template) if template else {}
        for job in self.jobs:
            if job.kind != "dynamodb":
                continue
            factor = from_infra.get(to_cfn_resource_name(job.name), 1)
            if isinstance(given, int):
                factor = given
            elif given is not None:
                factor = given.get(job.name, factor)
            if factor < 1:
                raise ValueError(f"{job.name}: parallelization must be at least 1, not {factor}")
            job.parallelization = factor

    # ----------------------------------------------------------------- public API

    def describe(self) -> list[dict[str, Any]]:
        """Return one dict per discovered handler (name, kind, handler string, source settings)."""
        return [self._describe_job(job) for job in self.jobs]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every delivery back while the block runs (a background ``run_forever`` waits), so
        a test can read several items as one snapshot of what the handlers wrote."""
        with self._poll_lock:
            yield

    def poll_once(self) -> int:
        """Deliver what is available on every stream and queue once; return the records delivered."""
        return self._poll()[0]

    def _poll(self) -> tuple[int, int]:
        """(stream and queue records, sandbox notifications) delivered in one pass."""
        delivered = 0
        with self._poll_lock:
            for job in self.jobs:
                if job.kind == "dynamodb":
                    delivered += self._poll_stream(job)
                elif job.kind == "sqs":
                    delivered += self._poll_queue(job)
            notified = self._deliver_notifications()
        return delivered, notified

    def _deliver_notifications(self) -> int:
        """POST the WeChat twins' due notifications to their notify URLs (when given a deliverer)."""
        if self.notifications is None:
            return 0
        try:
            return self.notifications()
        except Exception:  # the runner keeps going; the outbox retries on the next poll
            logger.exception("sandbox notification delivery failed")
            return 0

    def drain(self, timeout: float = 10.0) -> int:
        """Poll until a full pass delivers nothing; return the total (TimeoutError if it never settles)."""
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            delivered, notified = self._poll()
            total += delivered
            if delivered == 0 and notified == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams still busy after {timeout}s ({total} records delivered)")

    def fire_schedule(self, name: str) -> Any:
        """Call the scheduled handler ``name`` once with a CloudWatch scheduled event; return its result."""
        job = self._job(name, "schedule")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "time": _utc_now_iso(),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{self._function_name(job)}"],
            "detail": {},
        }
        logger.info("fire %s (%s)", name, job.schedule)
        return job.handler(event, self._context(job))

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

    def run_forever(self, stop: threading.Event, poll_interval: float = 0.5) -> None:
        """Poll streams and queues and fire due schedules until ``stop`` is set.

        Each schedule first fires one interval after start. Errors are logged, never raised.
        """
        now = time.monotonic()
        next_due = {job.name: now + float(job.interval or CRON_INTERVAL) for job in self.jobs if job.kind == "schedule"}
        logger.info("runner started: %d handler(s)", len(self.jobs))
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("poll failed")
            self._fire_due(next_due)
            stop.wait(poll_interval)
        logger.info("runner stopped")

    # ----------------------------------------------------------------- jobs & context

    def _job(self, name: str, kind: str) -> Job:
        """Return the job ``name`` of ``kind`` or raise KeyError."""
        for job in self.jobs:
            if job.name == name and job.kind == kind:
                return job
        raise KeyError(f"no {kind} handler named {name!r}")

    def _describe_job(self, job: Job) -> dict[str, Any]:
        """Describe one job for :meth:`describe`."""
        info: dict[str, Any] = {"name": job.name, "kind": job.kind, "handler": job.config.handler_string}
        if job.kind == "dynamodb" and isinstance(job.config, DynamoDBEventConfig):
            info.update(
                stream_arn=job.config.stream_arn,
                table=job.logical_table,
                local_table=self.table_name_for(str(job.logical_table)),
                batch_size=job.batch_size,
                starting_position=job.config.starting_position,
                parallelization=job.parallelization,
            )
        elif job.kind == "schedule":
            info.update(expression=job.schedule, interval_seconds=job.interval)
        elif job.kind == "sqs":
            info.update(queue=job.queue, batch_size=job.batch_size)
        return info

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

    def _fire_due(self, next_due: dict[str, float]) -> None:
        """Fire every schedule whose time has come and plan its next firing."""
        now = time.monotonic()
        for name, due in next_due.items():
            if now < due:
                continue
            job = self._job(name, "schedule")
            next_due[name] = now + float(job.interval or CRON_INTERVAL)
            try:
                self.fire_schedule(name)
            except Exception:
                logger.exception("schedule %s failed", name)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning only the first time ``key`` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # ----------------------------------------------------------------- streams

    def _stream_arn(self, job: Job) -> str | None:
        """Return the latest stream ARN of the job's local table, or None (warned once) if absent."""
        table = self.table_name_for(str(job.logical_table))
        try:
            desc = self._ddb.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if _client_error_code(exc) != "ResourceNotFoundException":
                raise
            self._warn_once(f"missing:{job.name}:{table}", "%s: table %s does not exist (yet)", job.name, table)
            return None
        arn: str | None = desc.get("LatestStreamArn")
        job.hash_key = next((k["AttributeName"] for k in desc.get("KeySchema", []) if k["KeyType"] == "HASH"), None)
        if not arn:
            self._warn_once(f"nostream:{job.name}:{table}", "%s: table %s has no stream", job.name, table)
        return arn

    def _shards(self, stream_arn: str) -> list[dict[str, Any]]:
        """Return all shards of a stream, parents before children."""
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            desc = self._streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(desc.get("Shards", []))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        return _parents_first(shards)

    def _poll_stream(self, job: Job) -> int:
        """Deliver the new records of every shard of the job's stream; return how many."""
        stream_arn = self._stream_arn(job)
        if stream_arn is None:
            return 0
        return sum(self._poll_shard(job, stream_arn, shard) for shard in self._shards(stream_arn))

    def _shard_iterator(self, stream_arn: str, shard_id: str, sequence: str | None) -> str | None:
        """Return an iterator after the checkpoint, or from the trim horizon when there is none."""
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id}
        response: dict[str, Any]
        if sequence:
            try:
                response = self._streams.get_shard_iterator(
                    **kwargs, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence
                )
                return response.get("ShardIterator")
            except ClientError as exc:
                if _client_error_code(exc) != "TrimmedDataAccessException":
                    raise
                logger.warning("checkpoint %s of %s was trimmed; reading from the horizon", sequence, shard_id)
        response = self._streams.get_shard_iterator(**kwargs, ShardIteratorType="TRIM_HORIZON")
        return response.get("ShardIterator")

    def _poll_shard(self, job: Job, stream_arn: str, shard: dict[str, Any]) -> int:
        """Read one shard from its checkpoint to its current end and deliver it, round by round.

        A round is what is there (up to ``MAX_ROUND`` records), spread over the job's lanes.
        """
        shard_id = shard["ShardId"]
        state = self._checkpoints.shard(job.name, stream_arn, shard_id)
        if state["finished"]:
            return 0
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        empty_pages_left = 5 if closed else 0
        iterator = self._shard_iterator(stream_arn, shard_id, state["sequenceNumber"])
        page_size = min(MAX_PAGE, job.batch_size * job.parallelization)
        delivered = 0
        while iterator:
            records: list[dict[str, Any]] = []
            while iterator and len(records) < MAX_ROUND:
                page = self._streams.get_records(ShardIterator=iterator, Limit=page_size)
                iterator = page.get("NextShardIterator")
                records.extend(page.get("Records", []))
                if not page.get("Records"):
                    if empty_pages_left <= 0 or records:
                        break
                    empty_pages_left -= 1
            if not records:
                break
            self._deliver_stream_round(job, stream_arn, state, records)
            delivered += len(records)
        if iterator is None:
            state["finished"] = True
            self._checkpoints.save()
        return delivered

    def _deliver_stream_round(
        self, job: Job, stream_arn: str, state: dict[str, Any], records: list[dict[str, Any]]
    ) -> None:
        """Deliver a round of records over the job's lanes, checkpointing the finished prefix."""
        items = [_Item(r["dynamodb"]["SequenceNumber"], self._lambda_record(r, stream_arn)) for r in records]

        def save(sequence: str) -> None:
            state["sequenceNumber"] = sequence
            self._checkpoints.save()

        progress = _Progress(items, save)
        lanes: list[list[_Item]] = [[] for _ in range(job.parallelization)]
        for item in items:
            keys = item.record["dynamodb"].get("Keys") or {}
            lanes[partition_lane(keys, job.hash_key, job.parallelization)].append(item)
        busy = [lane for lane in lanes if lane]

        def run_lane(lane: list[_Item]) -> None:
            for start in range(0, len(lane), job.batch_size):
                self._deliver(job, lane[start : start + job.batch_size], progress.commit)

        if len(busy) == 1:
            run_lane(busy[0])
            return
        with ThreadPoolExecutor(max_workers=len(busy), thread_name_prefix=f"{job.name}-lane") as pool:
            for future in [pool.submit(run_lane, lane) for lane in busy]:
                future.result()

    def _lambda_record(self, raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
        """Turn a GetRecords record into the record Lambda puts in a DynamoDB stream event."""
        ddb = dict(raw["dynamodb"])
        ddb["ApproximateCreationDateTime"] = _epoch_seconds(ddb.get("ApproximateCreationDateTime"))
        for key in _IMAGE_KEYS:
            if key in ddb:
                ddb[key] = {name: _encode_value(value) for name, value in ddb[key].items()}
        record = {key: raw[key] for key in _RECORD_ORDER if key in raw}
        record.update(awsRegion=self.region, dynamodb=ddb)
        if "userIdentity" in raw:
            record["userIdentity"] = raw["userIdentity"]
        record["eventSourceARN"] = stream_arn
        return record

    # ----------------------------------------------------------------- queues

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

    # ----------------------------------------------------------------- delivery engine

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


def _parents_first(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order shards so that every parent comes before its children."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in seen:
            return
        seen.add(shard["ShardId"])
        parent = by_id.get(shard.get("ParentShardId", ""))
        if parent is not None:
            visit(parent)
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered


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


# --------------------------------------------------------------------------- CLI


def load_app(app_dir: Path) -> Chalice:
    """Import ``app`` from ``app_dir/app.py`` and return its Chalice object."""
    path = str(app_dir.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module("app")
    app = getattr(module, "app", None)
    if not isinstance(app, Chalice):
        raise TypeError(f"{path}/app.py has no Chalice object named `app`")
    return app


def prefixed_table_name(prefix: str) -> Callable[[str], str]:
    """Return a ``table_name_for`` mapping ``users`` to ``<prefix>-users`` (already prefixed names pass)."""

    def table_name_for(logical: str) -> str:
        return logical if logical.startswith(f"{prefix}-") else f"{prefix}-{logical}"

    return table_name_for


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the CLI arguments."""
    parser = argparse.ArgumentParser(prog="python -m devtools.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", type=Path, default=Path())
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass over streams and queues, then exit")
    mode.add_argument("--drain", action="store_true", help="poll until nothing is left, then exit")
    mode.add_argument("--list", action="store_true", help="print the discovered handlers as JSON")
    parser.add_argument("--job", action="append", help="only this handler (repeatable); a schedule fires once")
    parser.add_argument("--schedule-interval", type=float, help="fire every schedule every S seconds")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--endpoint", default=os.environ.get("DYNAMODB_ENDPOINT"))
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument(
        "--parallelization", type=int, help="concurrent batches per shard (default: the app's ParallelizationFactor)"
    )
    parser.add_argument(
        "--spool-dir", type=Path, default=os.environ.get("LOCAL_QUEUE_DIR"), help="queue spool (LOCAL_QUEUE_DIR)"
    )
    return parser.parse_args(argv)


def _build_runner(args: argparse.Namespace) -> EventRunner:
    """Create the runner from CLI arguments and the app's environment."""
    prefix = os.environ.get("TABLE_PREFIX")
    if not prefix or not args.endpoint:
        raise SystemExit("runner: TABLE_PREFIX and DYNAMODB_ENDPOINT must be set (the app's local env)")
    return EventRunner(
        load_app(args.app_dir),
        table_name_for=prefixed_table_name(prefix),
        endpoint_url=args.endpoint,
        state_dir=args.state_dir,
        schedule_interval=args.schedule_interval,
        max_retries=args.max_retries,
        batch_size=args.batch_size,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        only=args.job,
        spool_dir=args.spool_dir,
        parallelization=args.parallelization,
        notifications=_sandbox_notifications(),
    )


def _sandbox_notifications() -> Callable[[], int] | None:
    """In the sandbox, the runner also POSTs the WeChat twins' notifications that are due."""
    if os.environ.get("WECHAT_MODE") != "sandbox":
        return None
    from chalicelib.wechat.outbox import deliver_due

    return deliver_due


def _run_once(runner: EventRunner, drain: bool, jobs: list[str] | None) -> None:
    """Fire the schedules named with --job, then poll once or drain."""
    for job in runner.jobs:
        if jobs and job.kind == "schedule":
            print(f"{job.name}: {runner.fire_schedule(job.name)!r}")
    delivered = runner.drain(timeout=300.0) if drain else runner.poll_once()
    print(f"delivered {delivered} record(s)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devtools.runner``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runner = _build_runner(args)
    if args.list:
        print(json.dumps(runner.describe(), indent=2))
        return 0
    if args.once or args.drain:
        _run_once(runner, args.drain, args.job)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.run_forever(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
