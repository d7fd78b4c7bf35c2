"""The Chalice app: routes and event handlers only, each a few lines."""

from __future__ import annotations

import json
import warnings
from typing import Any

from chalice.app import Chalice, DynamoDBEvent, Request, Response

from chalicelib.api import admin, miniprogram
from chalicelib.observability import logger, metrics
from chalicelib.services import jobs

app = Chalice(app_name="fenxiao")
app.register_blueprint(miniprogram.bp)
app.register_blueprint(admin.bp)

# Stream ARNs are placeholders: the merge template (infra/) points each at its table's real
# stream with Fn::GetAtt, and the local event runner maps them by the table name inside.
USERS_STREAM = "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/placeholder"


@app.middleware("http")
def observe(event: Request, get_response: Any) -> Response:
    """Correlation id, one log line per request, EMF metrics flushed, Chalice errors reshaped."""
    context = (event.context or {}) if event is not None else {}
    logger.set_correlation_id(context.get("requestId"))
    response: Response = get_response(event)
    if response.status_code >= 400 and isinstance(response.body, dict) and "Code" in response.body:
        response = _reshape_chalice_error(response)
    logger.info("request", extra={"path": context.get("resourcePath"), "status": response.status_code})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no metrics to publish" on plain reads
        metrics.flush_metrics()
    return response


def _reshape_chalice_error(response: Response) -> Response:
    """Chalice's own errors (405, 415, ...) in the one error shape of this API."""
    body = response.body if isinstance(response.body, dict) else {}
    code = str(body.get("Code", "error"))
    message = str(body.get("Message", ""))
    headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return Response(
        body={"error": {"code": code, "message": message}}, status_code=response.status_code, headers=headers
    )


@app.on_dynamodb_record(stream_arn=USERS_STREAM, batch_size=100, starting_position="TRIM_HORIZON")
def on_user_change(event: DynamoDBEvent) -> dict[str, Any]:
    """Moves the downline of a user whose upline changed (operator rebinds)."""
    from chalicelib.events import users_stream  # Powertools batch loads on first event only

    return users_stream.handle(event.to_dict(), event.context)


@app.schedule("cron(30 16 * * ? *)")  # 00:30 Asia/Shanghai
def seal_audit(event: Any) -> dict[str, Any]:
    """Seals yesterday's audit trail."""
    summary = jobs.run("seal_audit")
    logger.info("job done", extra={"job": "seal_audit", "summary": json.dumps(summary, default=str)})
    return summary
