"""The Chalice app: routes and event handlers only, each a few lines."""

from __future__ import annotations

import os
from typing import Any

from chalice.app import Chalice, DynamoDBEvent, SQSEvent

from chalicelib.api import (
    admin,
    admin_orders,
    audit,
    catalog,
    console,
    exports,
    merchant,
    middleware,
    miniprogram,
    openapi,
    operators,
    orders,
    parked,
    promoters,
    reports,
    simulator,
    withdrawals,
)
from chalicelib.services import jobs

app = Chalice(app_name="fenxiao")
app.register_blueprint(miniprogram.bp)
app.register_blueprint(admin.bp)
app.register_blueprint(console.bp)
app.register_blueprint(orders.bp)
app.register_blueprint(catalog.bp)
app.register_blueprint(merchant.bp)
app.register_blueprint(withdrawals.bp)
app.register_blueprint(parked.bp)
app.register_blueprint(audit.bp)
app.register_blueprint(openapi.bp)
app.register_blueprint(operators.bp)
app.register_blueprint(reports.bp)
app.register_blueprint(exports.bp)
app.register_blueprint(simulator.bp)
app.register_blueprint(promoters.bp)
app.register_blueprint(admin_orders.bp)

# Stream ARNs are placeholders: the merge template (infra/) points each at its table's real
# stream with Fn::GetAtt, and the local event runner maps them by the table name inside.
USERS_STREAM = "arn:aws:dynamodb:us-east-1:000000000000:table/users/stream/placeholder"


app.register_middleware(middleware.observe_http, "http")
app.register_middleware(middleware.observe_event, "dynamodb")
app.register_middleware(middleware.observe_event, "scheduled")
app.register_middleware(middleware.observe_event, "sqs")


@app.on_dynamodb_record(stream_arn=USERS_STREAM, batch_size=100, starting_position="TRIM_HORIZON")
def on_user_change(event: DynamoDBEvent) -> dict[str, Any]:
    """Moves the downline of a user whose upline changed (operator rebinds)."""
    from chalicelib.events import users_stream  # Powertools batch loads on first event only

    return users_stream.handle(event.to_dict(), event.context)


@app.schedule("cron(30 16 * * ? *)")  # 00:30 Asia/Shanghai
def seal_audit(event: Any) -> dict[str, Any]:
    """Seals yesterday's audit trail."""
    return jobs.fan_out("seal_audit")


@app.schedule("rate(1 hour)")
def auto_receipt(event: Any) -> dict[str, Any]:
    """Confirms receipt of orders paid long ago that the buyer never confirmed."""
    return jobs.fan_out("auto_receipt")


@app.schedule("rate(1 hour)")
def settle(event: Any) -> dict[str, Any]:
    """Moves due frozen commission to available (days after receipt, or weekly / monthly batches)."""
    return jobs.fan_out("settle")


ORDERS_STREAM = "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/placeholder"


# 30 orders x 3 levels + accounts + counters fit the 100 items of one transaction: one write per batch.
@app.on_dynamodb_record(stream_arn=ORDERS_STREAM, batch_size=30, starting_position="TRIM_HORIZON")
def on_order_change(event: DynamoDBEvent) -> dict[str, Any]:
    """The commission engine: paid, received, refunded and cancelled orders move commission."""
    from chalicelib.events import orders_stream

    return orders_stream.handle(event.to_dict(), event.context)


# Daily at 10:00 Asia/Shanghai unless PAYOUT_SCHEDULE says otherwise when the app is packaged.
PAYOUT_SCHEDULE = os.environ.get("PAYOUT_SCHEDULE") or "cron(0 2 * * ? *)"
# The queue ARN is a placeholder like the stream ARNs: the merge template points the event
# source at the real queue; locally the event runner delivers the queue named by its tail.
PAYOUT_QUEUE = "arn:aws:sqs:us-east-1:000000000000:payouts"


@app.schedule(PAYOUT_SCHEDULE)
def payout_run(event: Any) -> dict[str, Any]:
    """Pages through approved withdrawals and enqueues one transfer message each."""
    return jobs.fan_out("payout_run")


# Each schedule above fans out one message per tenant here: every tenant's run is its own invocation.
JOBS_QUEUE = "arn:aws:sqs:us-east-1:000000000000:jobs"


@app.on_sqs_message(queue_arn=JOBS_QUEUE, batch_size=1)
def run_tenant_job(event: SQSEvent) -> dict[str, Any]:
    """Runs one scheduled job for one tenant."""
    from chalicelib.events import job_queue

    return job_queue.handle(event.to_dict(), event.context)


@app.on_sqs_message(queue_arn=PAYOUT_QUEUE, batch_size=10)
def send_payout(event: SQSEvent) -> dict[str, Any]:
    """One WeChat merchant transfer bill per message (out_bill_no = the withdrawal id)."""
    from chalicelib.events import payout_queue

    return payout_queue.handle(event.to_dict(), event.context)


@app.schedule("rate(15 minutes)")
def reconcile_payouts(event: Any) -> dict[str, Any]:
    """Queries WeChat for transfers still in flight and finishes them."""
    return jobs.fan_out("reconcile_payouts")


@app.schedule("rate(10 minutes)")
def reconcile_payments(event: Any) -> dict[str, Any]:
    """Queries WeChat Pay for orders left unpaid after a prepay and refunds still processing."""
    return jobs.fan_out("reconcile_payments")


@app.schedule("rate(15 minutes)")
def redrive_parked(event: Any) -> dict[str, Any]:
    """Replays stream records parked after repeated failures, each item's in stream order."""
    return jobs.fan_out("redrive_parked")
