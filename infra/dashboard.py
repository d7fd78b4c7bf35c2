"""The CloudWatch dashboard and the generated alarms, written into the merge template.

The dashboard has a business row (orders paid, paid amount, commission per level, payouts,
refunds: the app's own metrics) and a technical row (alarm states, API Gateway, Lambda per
function, stream iterator age, dead-letter queues, parked records, queue ages, each scheduled
job's last success age, DynamoDB throttles). Its body is one `Fn::Sub` string, so function,
queue and table names and the region resolve at deploy time.

Everything per function, job, queue or table is built from what the app and the template have
(`infra.iam.FUNCTIONS`, the app's schedules and `jobs.JOBS`, the template's queues and tables),
so a new one appears on the dashboard and gets its alarms when this is run again, and
`--check` (tests/unit/test_dashboard.py) fails until it is. The generated alarms:

- per job of the jobs queue: `JobFailed` above 0 (a tenant's run raised); per scheduled job also
  no `JobSucceeded` in twice its period, missing data breaching (the job stopped running at all);
- `CommissionFailures` for 15 minutes, stream-handler Lambda errors, `PayoutsFailed`,
  reconciliation errors that persist (transfers and payments);
- throttles: Lambda per function and DynamoDB per table (metric math, at most 10 metrics an alarm).

Every alarm's description names its entry in infra/RUNBOOK.md (`Runbook: infra/RUNBOOK.md#<id>`).
Generated resources' logical ids start with `Ops`; a stale one (a removed job) is deleted.

    python -m infra.dashboard            # rewrite the generated parts of infra/merge-prod.json
    python -m infra.dashboard --check    # exit 1 when they are stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import iam

ROOT = iam.ROOT
MERGE = iam.MERGE
RUNBOOK = "infra/RUNBOOK.md"
PREFIX = "Ops"
DASHBOARD = f"{PREFIX}Dashboard"
TOPIC = {"Ref": "AlarmTopic"}
MAX_ALARM_WIDGET = 100  # alarms one alarm status widget can show
MAX_ALARM_METRICS = 10  # a metric math alarm reads at most 10 metrics (a hard CloudWatch limit)
DAY = 86_400
FULL_WIDTH = 24


def _config() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text("utf-8"))
    return data


CONFIG = _config()
_ENV = CONFIG["stages"][iam.STAGE]["environment_variables"]
NAMESPACE: str = _ENV["POWERTOOLS_METRICS_NAMESPACE"]
SERVICE: str = _ENV["POWERTOOLS_SERVICE_NAME"]
API_NAME: str = CONFIG["app_name"]  # API Gateway names the REST API after Chalice's app name
API_STAGE: str = CONFIG["stages"][iam.STAGE].get("api_gateway_stage", "api")


# --- what the app runs -------------------------------------------------------------------------


def schedule_seconds(expression: str) -> int:
    """The period of an EventBridge schedule: `rate(n unit)`, or a daily `cron(m h * * ? *)`."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        unit = {"minute": 60, "hour": 3600, "day": DAY}[rate.group(2).rstrip("s")]
        return int(rate.group(1)) * unit
    if re.fullmatch(r"cron\(\d+ \d+ \* \* \? \*\)", expression):
        return DAY
    raise ValueError(f"cannot tell the period of the schedule {expression!r}: teach infra/dashboard.py")


def jobs() -> list[str]:
    """Every job the jobs queue runs (`jobs.JOBS`), scheduled or started on demand (exports)."""
    from chalicelib.services.jobs import JOBS

    return list(JOBS)


def job_periods() -> dict[str, int]:
    """Each scheduled job and its schedule's period in seconds. A schedule is the app's scheduled
    handler named after the job it fans out per tenant; one naming no job fails here."""
    from chalice.app import ScheduledEventConfig

    from app import app

    schedules = {s.name: s.schedule_expression for s in app.event_sources if isinstance(s, ScheduledEventConfig)}
    unknown = sorted(set(schedules) - set(jobs()))
    if unknown:
        raise ValueError(f"schedules named after no job in jobs.JOBS: {unknown}")
    return {name: schedule_seconds(str(schedules[name])) for name in jobs() if name in schedules}


def logical_id(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def kebab(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", camel).lower()


def function_name(function: str) -> str:
    """The fixed name infra/iam.py gives every function, as `Fn::Sub` text."""
    return f"${{AWS::StackName}}-{function}"


def resources_of(template: dict[str, Any], kind: str) -> list[str]:
    return [name for name, res in template["Resources"].items() if res.get("Type") == kind]


def queues(template: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(dead-letter queues, work queues) of the template, by logical id."""
    names = resources_of(template, "AWS::SQS::Queue")
    dead = [n for n in names if n.endswith("DeadLetterQueue")]
    return dead, [n for n in names if n not in dead]


# --- metrics -----------------------------------------------------------------------------------


def app_metric(name: str, **dimensions: str) -> list[Any]:
    """A metric of the app as Powertools emits it: the namespace and a `service` dimension."""
    entry: list[Any] = [NAMESPACE, name, "service", SERVICE]
    for key, value in dimensions.items():
        entry += [key, value]
    return entry


def lambda_metric(name: str, function: str) -> list[Any]:
    return ["AWS/Lambda", name, "FunctionName", function_name(function)]


def api_metric(name: str) -> list[Any]:
    return ["AWS/ApiGateway", name, "ApiName", API_NAME, "Stage", API_STAGE]


def queue_metric(name: str, queue: str) -> list[Any]:
    return ["AWS/SQS", name, "QueueName", f"${{{queue}.QueueName}}"]


def table_metric(name: str, table: str) -> list[Any]:
    return ["AWS/DynamoDB", name, "TableName", f"${{{table}}}"]


def with_options(metric: list[Any], **options: Any) -> list[Any]:
    return [*metric, options]


# --- widgets -----------------------------------------------------------------------------------


@dataclass
class Grid:
    """Places widgets left to right, wrapping at the dashboard's 24 columns."""

    x: int = 0
    y: int = 0
    row_height: int = 0

    def place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > FULL_WIDTH:
            self.newline()
        spot = {"x": self.x, "y": self.y, "width": width, "height": height}
        self.x += width
        self.row_height = max(self.row_height, height)
        return spot

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0


def text(grid: Grid, markdown: str) -> dict[str, Any]:
    grid.newline()
    widget = {"type": "text", **grid.place(FULL_WIDTH, 1), "properties": {"markdown": markdown}}
    grid.newline()
    return widget


def graph(
    grid: Grid,
    title: str,
    metrics: Sequence[list[Any]],
    *,
    stat: str = "Sum",
    period: int = 300,
    width: int = 8,
    view: str = "timeSeries",
    label: str | None = None,
    start: str | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title,
        "region": "${AWS::Region}",
        "view": view,
        "stat": stat,
        "period": period,
        "metrics": list(metrics),
    }
    if view == "timeSeries":
        properties["stacked"] = False
    if start:
        properties["start"] = start  # this widget's own time range (ISO 8601 duration before now)
    if label:
        properties["yAxis"] = {"left": {"label": label, "showUnits": False}}
    return {"type": "metric", **grid.place(width, 6), "properties": properties}


def in_yuan(metrics: Sequence[tuple[str, list[Any]]]) -> list[list[Any]]:
    """Fen metrics shown in yuan: each metric hidden, an expression dividing it by 100 shown."""
    rows: list[list[Any]] = []
    for index, (label, metric) in enumerate(metrics, start=1):
        rows.append(with_options(metric, id=f"f{index}", visible=False))
        rows.append([{"expression": f"f{index}/100", "label": label, "id": f"y{index}"}])
    return rows


def success_age(jobs: Sequence[str]) -> list[list[Any]]:
    """Minutes since each job's last `JobSucceeded`: the time of each period minus the time of
    the last period with a success (EPOCH gives a data point's time, FILL REPEAT carries the last
    success forward over the periods without one)."""
    rows: list[list[Any]] = []
    for index, job in enumerate(jobs, start=1):
        rows.append(with_options(app_metric("JobSucceeded", job=job), id=f"s{index}", visible=False))
        expression = f"(EPOCH(FILL(s{index}, 0)) - FILL(EPOCH(s{index}), REPEAT)) / 60"
        rows.append([{"expression": expression, "label": f"{job} (min)", "id": f"a{index}"}])
    return rows


def business(grid: Grid) -> list[dict[str, Any]]:
    levels = ("1", "2", "3")
    return [
        text(grid, "## 业务 Business (orders, commission, payouts, refunds)"),
        graph(grid, "Orders paid", [app_metric("OrdersPaid"), app_metric("OrdersPlaced")], period=3600),
        graph(grid, "Paid amount (yuan)", in_yuan([("paid", app_metric("OrdersPaidFen"))]), period=3600),
        graph(
            grid,
            "Commission earned per level (yuan)",
            in_yuan([(f"level {n}", app_metric("CommissionFen", level=n)) for n in levels]),
            period=3600,
        ),
        graph(
            grid,
            "Payouts",
            [app_metric(m) for m in ("WithdrawalsRequested", "PayoutsSent", "PayoutsSucceeded", "PayoutsFailed")],
            period=3600,
        ),
        graph(
            grid,
            "Payout amount (yuan)",
            in_yuan(
                [
                    ("requested", app_metric("WithdrawalsRequestedFen")),
                    ("succeeded", app_metric("PayoutsSucceededFen")),
                    ("failed", app_metric("PayoutsFailedFen")),
                ]
            ),
            period=3600,
        ),
        graph(
            grid,
            "Refunds",
            [app_metric(m) for m in ("Refunds", "RefundsSucceeded", "RefundsFailed", "RefundsUnknown")],
            period=3600,
        ),
        graph(grid, "Refunded amount (yuan)", in_yuan([("refunded", app_metric("RefundsSucceededFen"))]), period=3600),
    ]


def technical(grid: Grid, template: dict[str, Any], alarm_ids: Sequence[str]) -> list[dict[str, Any]]:
    functions = list(iam.FUNCTIONS)
    streams = [name for name, f in iam.FUNCTIONS.items() if f.stream]
    dead, work = queues(template)
    tables = resources_of(template, "AWS::DynamoDB::Table")
    scheduled = list(job_periods())
    alarms = [f"${{{name}.Arn}}" for name in alarm_ids]
    if len(alarms) > MAX_ALARM_WIDGET:
        raise ValueError(f"{len(alarms)} alarms: split the alarm status widget")
    widgets = [text(grid, "## 运维 Technical (API, functions, streams, queues, jobs, tables)")]
    widgets.append(
        {
            "type": "alarm",
            **grid.place(FULL_WIDTH, 6),
            "properties": {"title": "Alarms", "alarms": alarms, "sortBy": "stateUpdatedTimestamp"},
        }
    )
    widgets += [
        graph(grid, "API requests and errors", [api_metric(m) for m in ("Count", "4XXError", "5XXError")]),
        graph(
            grid,
            "API latency (ms)",
            [
                with_options(api_metric("Latency"), stat="p50", label="p50"),
                with_options(api_metric("Latency"), stat="p99", label="p99"),
                with_options(api_metric("IntegrationLatency"), stat="p99", label="integration p99"),
            ],
            stat="p99",
            period=60,
        ),
        graph(
            grid,
            "Stream iterator age (ms)",
            [lambda_metric("IteratorAge", f) for f in streams],
            stat="Maximum",
            period=60,
        ),
        graph(grid, "Lambda errors per function", [lambda_metric("Errors", f) for f in functions]),
        graph(grid, "Lambda throttles per function", [lambda_metric("Throttles", f) for f in functions]),
        graph(grid, "Lambda duration p99 (ms)", [lambda_metric("Duration", f) for f in functions], stat="p99"),
        graph(
            grid,
            "Dead-letter queues (messages)",
            [queue_metric("ApproximateNumberOfMessagesVisible", q) for q in dead],
            stat="Maximum",
            period=60,
        ),
        graph(
            grid,
            "Parked stream records and commission failures",
            [
                app_metric("EventsParked"),
                with_options(app_metric("ParkedEventsWaiting"), stat="Maximum"),
                app_metric("EventsReplayed"),
                app_metric("CommissionFailures"),
            ],
        ),
        graph(
            grid,
            "Queue age, oldest payout in flight (s)",
            [
                *(queue_metric("ApproximateAgeOfOldestMessage", q) for q in work),
                app_metric("PayoutInFlightOldestSeconds"),
            ],
            stat="Maximum",
        ),
        graph(
            grid,
            "Scheduled jobs: minutes since last success",
            success_age(scheduled),
            period=600,
            start="-P3D",  # the daily jobs' last success is within the range
        ),
        graph(grid, "Jobs: failed runs", [app_metric("JobFailed", job=j) for j in jobs()]),
        graph(
            grid,
            "Reconciliation trouble",
            [
                app_metric(m)
                for m in (
                    "ReconciliationMismatches",
                    "ReconciliationErrors",
                    "PaymentMismatches",
                    "PaymentReconciliationErrors",
                )
            ],
        ),
        graph(
            grid,
            "DynamoDB throttled requests per table",
            [table_metric(m, t) for t in tables for m in ("ReadThrottleEvents", "WriteThrottleEvents")],
            width=FULL_WIDTH,
        ),
    ]
    return widgets


def dashboard(template: dict[str, Any], alarm_ids: Sequence[str]) -> dict[str, Any]:
    grid = Grid()
    body = {"widgets": [*business(grid), *technical(grid, template, alarm_ids)]}
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": {"Ref": "AWS::StackName"},
            # every `${...}` in the body names the template (no dynamic labels, which would need `${!`)
            "DashboardBody": {"Fn::Sub": json.dumps(body, ensure_ascii=False)},
        },
    }


# --- alarms ------------------------------------------------------------------------------------


def _alarm(name: str, description: str, runbook: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": {"Fn::Sub": f"${{AWS::StackName}}-{name}"},
            "AlarmDescription": f"{description} Runbook: {RUNBOOK}#{runbook}",
            **properties,
            "AlarmActions": [TOPIC],
            "OKActions": [TOPIC],
        },
    }


def _dimensions(metric: list[Any]) -> list[dict[str, Any]]:
    pairs = metric[2:]
    return [{"Name": pairs[i], "Value": pairs[i + 1]} for i in range(0, len(pairs), 2)]


def _sub_value(value: str) -> Any:
    """A dimension value for an alarm: plain text, or `Fn::Sub` where it names the template."""
    return {"Fn::Sub": value} if "${" in value else value


def metric_alarm(
    name: str,
    description: str,
    runbook: str,
    metric: list[Any],
    *,
    stat: str = "Sum",
    period: int = 300,
    periods: int = 1,
    threshold: float = 0,
    comparison: str = "GreaterThanThreshold",
    missing: str = "notBreaching",
) -> dict[str, Any]:
    if period * periods > (DAY if period < 3600 else 7 * DAY):  # CloudWatch refuses longer ranges
        raise ValueError(f"{name}: evaluation range too long")
    dimensions = [{"Name": d["Name"], "Value": _sub_value(d["Value"])} for d in _dimensions(metric)]
    return _alarm(
        name,
        description,
        runbook,
        Namespace=metric[0],
        MetricName=metric[1],
        Dimensions=dimensions,
        Statistic=stat,
        Period=period,
        EvaluationPeriods=periods,
        DatapointsToAlarm=periods,
        Threshold=threshold,
        ComparisonOperator=comparison,
        TreatMissingData=missing,
    )


def sum_alarms(
    name: str, description: str, runbook: str, metrics: Sequence[list[Any]], *, period: int = 300
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Alarms on the sum of many metrics above 0, in as many alarms as the 10-metric limit needs
    (`name`, `name-2`, ...)."""
    for part, start in enumerate(range(0, len(metrics), MAX_ALARM_METRICS), start=1):
        chunk = metrics[start : start + MAX_ALARM_METRICS]
        queries: list[dict[str, Any]] = [
            {
                "Id": f"m{i}",
                "ReturnData": False,
                "MetricStat": {
                    "Metric": {
                        "Namespace": metric[0],
                        "MetricName": metric[1],
                        "Dimensions": [
                            {"Name": d["Name"], "Value": _sub_value(d["Value"])} for d in _dimensions(metric)
                        ],
                    },
                    "Period": period,
                    "Stat": "Sum",
                },
            }
            for i, metric in enumerate(chunk, start=1)
        ]
        queries.append({"Id": "total", "Expression": "SUM(METRICS())", "Label": name, "ReturnData": True})
        suffix = "" if part == 1 else f"-{part}"
        yield (
            f"{part}",
            _alarm(
                f"{name}{suffix}",
                description,
                runbook,
                Metrics=queries,
                EvaluationPeriods=1,
                DatapointsToAlarm=1,
                Threshold=0,
                ComparisonOperator="GreaterThanThreshold",
                TreatMissingData="notBreaching",
            ),
        )


def job_alarms() -> dict[str, dict[str, Any]]:
    alarms: dict[str, dict[str, Any]] = {}
    periods = job_periods()
    for job in jobs():
        slug, lid = job.replace("_", "-"), logical_id(job)
        alarms[f"{PREFIX}Job{lid}FailedAlarm"] = metric_alarm(
            f"job-{slug}-failed",
            f"A run of the job {job} raised for a tenant (JobFailed); SQS retries it, "
            "five failures move it to the jobs dead-letter queue.",
            "job-failed",
            app_metric("JobFailed", job=job),
        )
        period = periods.get(job)
        if period is None:
            continue  # started on demand: no period to miss
        alarms[f"{PREFIX}Job{lid}StaleAlarm"] = metric_alarm(
            f"job-{slug}-stale",
            f"The scheduled job {job} (every {period // 60} minutes) has not succeeded for any tenant "
            "in two of its periods (no JobSucceeded; missing data counts as breaching).",
            "job-stale",
            app_metric("JobSucceeded", job=job),
            period=period,
            periods=2,
            threshold=1,
            comparison="LessThanThreshold",
            missing="breaching",
        )
    return alarms


def money_alarms() -> dict[str, dict[str, Any]]:
    alarms = {
        f"{PREFIX}CommissionFailuresAlarm": metric_alarm(
            "commission-failures",
            "The commission engine has reported failed order records for 15 minutes (CommissionFailures): "
            "commission is late, and records that keep failing get parked.",
            "commission-failures",
            app_metric("CommissionFailures"),
            periods=3,
        ),
        f"{PREFIX}PayoutsFailedAlarm": metric_alarm(
            "payouts-failed",
            "A transfer finished as failed (WeChat FAIL / CANCELLED, a refusal, or abandoned): the money "
            "went back to the promoter's available balance and the promoter was not paid.",
            "payouts-failed",
            app_metric("PayoutsFailed"),
        ),
        f"{PREFIX}TransferReconciliationErrorsAlarm": metric_alarm(
            "transfer-reconciliation-errors",
            "Querying WeChat for transfers in flight has failed in three runs in a row (ReconciliationErrors).",
            "reconciliation-errors",
            app_metric("ReconciliationErrors"),
            period=900,
            periods=3,
        ),
        f"{PREFIX}PaymentReconciliationErrorsAlarm": metric_alarm(
            "payment-reconciliation-errors",
            "Querying WeChat Pay for unpaid orders and refunds in progress has failed in three runs in a row "
            "(PaymentReconciliationErrors).",
            "reconciliation-errors",
            app_metric("PaymentReconciliationErrors"),
            period=600,
            periods=3,
        ),
    }
    for function, spec in iam.FUNCTIONS.items():
        if spec.stream:
            alarms[f"{PREFIX}{function}ErrorsAlarm"] = metric_alarm(
                f"{kebab(function)}-errors",
                f"The stream handler {function} itself failed (crash or timeout, not a reported record) "
                "in two 5-minute periods in a row: its whole batch is retried.",
                "stream-handler-errors",
                lambda_metric("Errors", function),
                periods=2,
            )
    return alarms


def throttle_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    alarms: dict[str, dict[str, Any]] = {}
    lambdas = [lambda_metric("Throttles", f) for f in iam.FUNCTIONS]
    for part, alarm in sum_alarms(
        "lambda-throttles",
        "Lambda refused to run a function (concurrency exhausted) in the last 5 minutes.",
        "lambda-throttles",
        lambdas,
    ):
        alarms[f"{PREFIX}LambdaThrottles{part}Alarm"] = alarm
    tables = [
        table_metric(m, t)
        for t in resources_of(template, "AWS::DynamoDB::Table")
        for m in ("ReadThrottleEvents", "WriteThrottleEvents")
    ]
    for part, alarm in sum_alarms(
        "dynamodb-throttles",
        "DynamoDB throttled reads or writes on a table in the last 5 minutes (hot partition or the "
        "on-demand table limits).",
        "dynamodb-throttles",
        tables,
    ):
        alarms[f"{PREFIX}DynamoDbThrottles{part}Alarm"] = alarm
    return alarms


def generated(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    alarms = {**job_alarms(), **money_alarms(), **throttle_alarms(template)}
    others = [
        name
        for name in resources_of(template, "AWS::CloudWatch::Alarm")
        if not name.startswith(PREFIX) and name not in alarms
    ]
    return {**alarms, DASHBOARD: dashboard(template, [*others, *alarms])}


def apply(template: dict[str, Any]) -> dict[str, Any]:
    """`template` with the generated resources replaced (others untouched, order kept)."""
    resources = template["Resources"]
    wanted = generated(template)
    for name in [n for n in resources if n.startswith(PREFIX) and n not in wanted]:
        del resources[name]
    resources.update(wanted)
    return template


def render(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if infra/merge-prod.json is stale")
    args = parser.parse_args(argv)
    current = Path(MERGE).read_text("utf-8")
    wanted = render(apply(json.loads(current)))
    if args.check:
        if wanted != current:
            print("infra/merge-prod.json is stale: run `python -m infra.dashboard`", file=sys.stderr)
            return 1
        return 0
    Path(MERGE).write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
