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

Modules: ``discovery`` (handlers → jobs), ``delivery`` (invocation, retries, bisection,
parking), ``streams`` (shards, lanes, checkpoints), ``queues`` (in-process SQS and the spool),
``engine`` (:class:`EventRunner`: one pass, drain, schedules) and ``cli``.

CLI: ``python -m devtools.runner --app-dir . [--once|--drain] [--job NAME] [--schedule-interval S]``.
"""

from __future__ import annotations

from devtools.runner.cli import DEFAULT_STATE_DIR, load_app, main, prefixed_table_name
from devtools.runner.delivery import LocalLambdaContext
from devtools.runner.discovery import (
    Job,
    app_infra_template,
    discover_jobs,
    logical_table_from_arn,
    parallelization_factors,
    schedule_interval_seconds,
)
from devtools.runner.engine import EventRunner
from devtools.runner.streams import CheckpointStore, partition_lane

__all__ = [
    "DEFAULT_STATE_DIR",
    "CheckpointStore",
    "EventRunner",
    "Job",
    "LocalLambdaContext",
    "app_infra_template",
    "discover_jobs",
    "load_app",
    "logical_table_from_arn",
    "main",
    "parallelization_factors",
    "partition_lane",
    "prefixed_table_name",
    "schedule_interval_seconds",
]
