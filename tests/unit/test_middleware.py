"""Middleware: tracing on or off, Chalice errors reshaped, metrics flushed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from chalice.app import Response
from pytest_socket import disable_socket, enable_socket

from chalicelib import observability
from chalicelib.api import middleware
from tests import events


class _Emitter:
    """Collects X-Ray entities instead of sending them to a daemon (the network is blocked)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity)

    def set_daemon_address(self, address: str) -> None:
        pass


@pytest.fixture(params=["true", "false"])
def tracing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", request.param)
    monkeypatch.setenv("AWS_XRAY_CONTEXT_MISSING", "IGNORE_ERROR")
    cached_tracer = observability.get_tracer
    cached_tracer.cache_clear()
    emitter = _Emitter()
    if request.param == "false":
        monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")  # Powertools traces only in Lambda
        # the SDK makes (never uses) a UDP socket when imported; nothing is sent: the emitter is replaced
        enable_socket()
        from aws_xray_sdk.core import xray_recorder

        disable_socket(allow_unix_socket=True)
        monkeypatch.setattr(xray_recorder, "_emitter", emitter)
        # as in Lambda: the function's segment comes from the trace header Lambda sets
        monkeypatch.setenv(
            "_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        )
        # The app's tracer patches botocore for the whole process; in tests keep other tests'
        # DynamoDB calls out of the trace (and untouched): the same Tracer, without patching.
        from aws_lambda_powertools import Tracer

        tracer = Tracer(service="fenxiao", auto_patch=False)
        monkeypatch.setattr(observability, "get_tracer", lambda: tracer)
        monkeypatch.setattr(middleware, "get_tracer", lambda: tracer)
    yield emitter
    cached_tracer.cache_clear()


def test_http_errors_from_chalice_get_the_error_shape(tracing: _Emitter) -> None:
    request = SimpleNamespace(context={"resourcePath": "/v1/me", "requestId": "r-1", "httpMethod": "PUT"})
    chalice_error = Response(
        body={"Code": "MethodNotAllowedError", "Message": "Unsupported method: PUT"}, status_code=405
    )
    response = middleware.observe_http(request, lambda _: chalice_error)  # type: ignore[arg-type]
    assert response.status_code == 405
    assert response.body == {"error": {"code": "MethodNotAllowedError", "message": "Unsupported method: PUT"}}
    if observability.tracing_enabled():
        assert "## /v1/me" in [entity.name for entity in tracing.sent]


def test_ok_responses_pass_through_and_events_are_observed(tracing: _Emitter) -> None:
    request = SimpleNamespace(context={"resourcePath": "/v1/health", "requestId": "r-2"})
    ok = Response(body={"status": "ok"}, status_code=200)
    assert middleware.observe_http(request, lambda _: ok) is ok  # type: ignore[arg-type]
    event = SimpleNamespace(context=events.lambda_context("fenxiao-on_user_change", aws_request_id="a-1"))
    assert middleware.observe_event(event, lambda _: {"batchItemFailures": []}) == {"batchItemFailures": []}


def test_counts_with_dimensions_are_emitted_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    observability.count("BindRejected", reason="cycle")
    out = capsys.readouterr().out
    assert '"BindRejected"' in out
    assert '"reason": "cycle"' in out or '"reason":"cycle"' in out
