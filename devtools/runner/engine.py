"""The event runner: discovered jobs, one delivery pass over streams and queues, and schedules."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from chalice.app import Chalice, DynamoDBEventConfig
from chalice.utils import to_cfn_resource_name

from devtools.ddb_local import local_client
from devtools.runner.delivery import ACCOUNT_ID, _Item, _utc_now_iso
from devtools.runner.discovery import (
    CRON_INTERVAL,
    Job,
    app_infra_template,
    discover_jobs,
    parallelization_factors,
)
from devtools.runner.queues import Queues
from devtools.runner.streams import CheckpointStore, Streams

logger = logging.getLogger("runner")


class EventRunner(Streams, Queues):
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

    # ----------------------------------------------------------------- jobs & schedules

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
