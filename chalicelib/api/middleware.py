"""Chalice middleware: Powertools logging (correlation id), tracing and metrics for every
invocation, and Chalice's own errors reshaped into the API's one error shape."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from chalice.app import Request, Response

from chalicelib.observability import get_tracer, logger, metrics


@contextmanager
def _traced(name: str, **annotations: str) -> Iterator[None]:
    tracer = get_tracer()
    if tracer is None:
        with nullcontext():
            yield
        return
    with tracer.provider.in_subsegment(name=name) as subsegment:
        for key, value in annotations.items():
            subsegment.put_annotation(key=key, value=value)
        yield


def _flush_metrics() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no metrics to publish" on plain reads
        metrics.flush_metrics()


def observe_http(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """One log line and one trace subsegment per request; EMF metrics flushed after it."""
    context = (event.context or {}) if event is not None else {}
    route = str(context.get("resourcePath") or "")
    logger.set_correlation_id(context.get("requestId"))
    try:
        with _traced(f"## {route}", route=route):
            response = get_response(event)
        if response.status_code >= 400 and isinstance(response.body, dict) and "Code" in response.body:
            response = reshape_chalice_error(response)
        logger.info(
            "request", extra={"route": route, "method": context.get("httpMethod"), "status": response.status_code}
        )
        return response
    finally:
        _flush_metrics()


def observe_event(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Stream and scheduled invocations: the Lambda request id as correlation id, metrics flushed."""
    context = getattr(event, "context", None)
    logger.set_correlation_id(getattr(context, "aws_request_id", None))
    name = getattr(context, "function_name", "event")
    try:
        with _traced(f"## {name}", function=str(name)):
            return get_response(event)
    finally:
        _flush_metrics()


def reshape_chalice_error(response: Response) -> Response:
    """Chalice's own errors (405, 415, ...) in the one error shape of this API."""
    body = response.body if isinstance(response.body, dict) else {}
    error = {"code": str(body.get("Code", "error")), "message": str(body.get("Message", ""))}
    headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return Response(body={"error": error}, status_code=response.status_code, headers=headers)
