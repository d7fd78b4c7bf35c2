"""Powertools logger, metrics and tracer, shared by every function of the app.

The tracer (X-Ray SDK) is the heaviest import of all, so it is built on first use and
only where tracing is on (`POWERTOOLS_TRACE_DISABLED` unset or false).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from chalicelib.caches import cached

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "fenxiao")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fenxiao")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() not in {"1", "true", "yes"}


@cached(maxsize=1)
def get_tracer() -> Any:
    """The Powertools Tracer, or None where tracing is off (local runs and tests)."""
    if not tracing_enabled():
        return None

    return Tracer(service=SERVICE)


def count(name: str, value: int = 1, **dimensions: str) -> None:
    """Add to a count metric; with dimensions it is emitted at once as its own EMF blob."""
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        for key, val in dimensions.items():
            metric.add_dimension(name=key, value=val)


def gauge(name: str, value: float, unit: str = "Seconds") -> None:
    """A point-in-time figure (e.g. the age of the oldest payout in flight)."""
    metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
