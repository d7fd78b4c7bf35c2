"""Discovery: the stream, schedule and SQS handlers a Chalice app registers, as runner jobs.

Handlers come from the app object itself (``app.event_sources`` + ``app.handler_map``). A stream
job's local table is the name inside its decorator's ARN (``table/<logical>/``); a schedule's
local interval comes from its expression; a stream handler's parallelization (Lambda's
``ParallelizationFactor``) can be read from the app's merge template.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.app import (
    BaseEventSourceConfig,
    Chalice,
    DynamoDBEventConfig,
    ScheduledEventConfig,
    ScheduleExpression,
    SQSEventConfig,
)

logger = logging.getLogger("runner")

INFRA_TEMPLATE = Path("infra") / "merge-prod.json"  # relative to the app's directory
CRON_INTERVAL = 3600.0
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}

Handler = Callable[[dict[str, Any], Any], Any]


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
