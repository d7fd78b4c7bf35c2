"""The CloudWatch dashboard and alarms of the packaged template (`chalice package` with the merge).

The dashboard body is read as CloudFormation would resolve it; every metric of the app's namespace
on it, and every alarm on such a metric, must be emitted by chalicelib with the same dimensions
(a scan of the `count(...)` / `gauge(...)` calls), so a renamed metric cannot leave a graph empty or
an alarm silent. Every alarm names its infra/RUNBOOK.md entry and shows on the dashboard; every
function of the template is graphed; every scheduled job is alarmed on failing and on not succeeding
in twice its period.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import dashboard

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STACK = "fenxiao-prod"
PSEUDO = {"AWS::Partition": "aws-cn", "AWS::Region": "cn-north-1", "AWS::AccountId": "123456789012"}
PSEUDO["AWS::StackName"] = STACK
ALARM = "AWS::CloudWatch::Alarm"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "AWS_DEFAULT_REGION": "cn-north-1"}
    cmd = [str(ROOT / ".venv" / "bin" / "chalice"), "package", "--stage", "prod"]
    cmd += ["--merge-template", "infra/merge-prod.json", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    data: dict[str, Any] = json.loads((out / "sam.json").read_text("utf-8"))
    return data


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res.get("Type") == kind}


def sub(text: str, resources: dict[str, Any]) -> str:
    """`Fn::Sub` text as CloudFormation would resolve it (a reference to nothing fails)."""

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref in PSEUDO:
            return PSEUDO[ref]
        name, _, attribute = ref.partition(".")
        assert name in resources, f"`${{{ref}}}` names no resource"
        props = resources[name].get("Properties", {})
        if not attribute and resources[name]["Type"] == "AWS::DynamoDB::Table":
            return str(props["TableName"])
        if attribute == "QueueName":
            return str(props["QueueName"])
        return f"<{ref}>"

    return re.sub(r"\$\{([^}!]+)\}", one, text)


def value(raw: Any, resources: dict[str, Any]) -> str:
    if isinstance(raw, str):
        return raw
    if "Fn::Sub" in raw:
        return sub(raw["Fn::Sub"], resources)
    if "Ref" in raw:
        return PSEUDO.get(raw["Ref"]) or sub(f"${{{raw['Ref']}}}", resources)
    if "Fn::GetAtt" in raw:
        return sub("${" + ".".join(raw["Fn::GetAtt"]) + "}", resources)
    raise AssertionError(f"cannot resolve {raw!r}")


@pytest.fixture(scope="module")
def body(template: dict[str, Any]) -> dict[str, Any]:
    boards = of_type(template, "AWS::CloudWatch::Dashboard")
    assert list(boards) == [dashboard.DASHBOARD]
    raw = boards[dashboard.DASHBOARD]["Properties"]["DashboardBody"]
    data: dict[str, Any] = json.loads(value(raw, template["Resources"]))
    return data


def widget_metrics(widget: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, name, dimensions) of each metric a widget reads (expressions left out)."""
    found = []
    for row in widget.get("properties", {}).get("metrics", []):
        fields = [f for f in row if not isinstance(f, dict)]
        if fields:
            namespace, name, *pairs = fields
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


def alarm_metrics(props: dict[str, Any], resources: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    stats = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
    if "MetricName" in props:
        stats.append(props)
    return [
        (m["Namespace"], m["MetricName"], {d["Name"]: value(d["Value"], resources) for d in m.get("Dimensions", [])})
        for m in stats
    ]


# --- what chalicelib emits -----------------------------------------------------------------------


def emitted(root: Path = ROOT / "chalicelib") -> set[tuple[str, frozenset[str]]]:
    """(metric, dimension names) of every `count(...)` / `gauge(...)` call with a literal name
    (`"A" if x else "B"` gives both). observability adds the `service` dimension to each."""
    found: set[tuple[str, frozenset[str]]] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called not in {"count", "gauge"}:
                continue
            first = node.args[0]
            names = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            dims = frozenset({"service", *(k.arg for k in node.keywords if k.arg and k.arg != "unit")})
            for name in names:
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    found.add((name.value, dims))
    return found


EMITTED = emitted()


def unemitted(metrics: list[tuple[str, str, dict[str, str]]]) -> list[str]:
    """The app-namespace metrics among `metrics` that no code emits with those dimensions."""
    wrong = []
    for namespace, name, dims in metrics:
        if namespace != dashboard.NAMESPACE:
            continue
        if (name, frozenset(dims)) not in EMITTED or dims.get("service") != dashboard.SERVICE:
            wrong.append(f"{name} {dims}")
    return wrong


def test_the_scan_finds_metrics_with_their_dimensions(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text(
        'count("Plain")\nobservability.count("Levelled", 5, level="1")\n'
        'count("A" if ok else "B")\ngauge("Age", 3.0, unit="Seconds")\nother("Nope")\n'
    )
    assert emitted(tmp_path) == {
        ("Plain", frozenset({"service"})),
        ("Levelled", frozenset({"service", "level"})),
        ("A", frozenset({"service"})),
        ("B", frozenset({"service"})),
        ("Age", frozenset({"service"})),
    }


def test_a_metric_nobody_emits_is_caught() -> None:
    service = {"service": dashboard.SERVICE}
    assert unemitted([(dashboard.NAMESPACE, "OrdersPaid", service)]) == []
    assert unemitted([(dashboard.NAMESPACE, "OrdersPayed", service)]) != []  # a typo
    assert unemitted([(dashboard.NAMESPACE, "CommissionFen", service)]) != []  # emitted only per level
    assert unemitted([("AWS/Lambda", "Errors", {"FunctionName": "x"})]) == []  # AWS's own


# --- the dashboard -------------------------------------------------------------------------------


def test_the_merge_template_is_generated() -> None:
    assert dashboard.main(["--check"]) == 0, "run `python -m infra.dashboard`"


def test_every_app_metric_on_the_dashboard_is_emitted(body: dict[str, Any]) -> None:
    metrics = [m for w in body["widgets"] for m in widget_metrics(w)]
    assert any(ns == dashboard.NAMESPACE for ns, _, _ in metrics)
    assert unemitted(metrics) == []


def test_the_business_row_shows_orders_amounts_commission_payouts_and_refunds(body: dict[str, Any]) -> None:
    names = {(name, dims.get("level")) for w in body["widgets"] for ns, name, dims in widget_metrics(w)}
    for metric in ("OrdersPaid", "OrdersPaidFen", "PayoutsSucceeded", "PayoutsSucceededFen", "RefundsSucceededFen"):
        assert (metric, None) in names
    assert {("CommissionFen", level) for level in ("1", "2", "3")} <= names


def _widget(body: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [w for w in body["widgets"] if w.get("properties", {}).get("title") == title]
    assert len(matches) == 1, title
    return matches[0]


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        ("Lambda errors per function", "Errors"),
        ("Lambda throttles per function", "Throttles"),
        ("Lambda duration p99 (ms)", "Duration"),
    ],
)
def test_every_function_is_graphed(template: dict[str, Any], body: dict[str, Any], title: str, metric: str) -> None:
    resources = template["Resources"]
    functions = {
        value(res["Properties"]["FunctionName"], resources)
        for res in of_type(template, "AWS::Serverless::Function").values()
    }
    assert len(functions) >= 12
    graphed = {dims["FunctionName"] for ns, name, dims in widget_metrics(_widget(body, title)) if name == metric}
    assert graphed == functions


def test_stream_functions_iterator_age_and_every_queue_are_graphed(
    template: dict[str, Any], body: dict[str, Any]
) -> None:
    resources = template["Resources"]
    streams = {
        value(res["Properties"]["FunctionName"], resources)
        for res in of_type(template, "AWS::Serverless::Function").values()
        if any(e["Type"] == "DynamoDB" for e in res["Properties"].get("Events", {}).values())
    }
    ages = {d["FunctionName"] for _, _, d in widget_metrics(_widget(body, "Stream iterator age (ms)"))}
    assert ages == streams and streams
    queues = {res["Properties"]["QueueName"] for res in of_type(template, "AWS::SQS::Queue").values()}
    dlq = {d["QueueName"] for _, _, d in widget_metrics(_widget(body, "Dead-letter queues (messages)"))}
    work = {d.get("QueueName") for _, _, d in widget_metrics(_widget(body, "Queue age, oldest payout in flight (s)"))}
    assert dlq | (work - {None}) == queues
    assert all("dead" in q or "dlq" in q for q in dlq)


def test_every_table_is_graphed_for_throttles(template: dict[str, Any], body: dict[str, Any]) -> None:
    tables = {res["Properties"]["TableName"] for res in of_type(template, "AWS::DynamoDB::Table").values()}
    graphed = widget_metrics(_widget(body, "DynamoDB throttled requests per table"))
    for metric in ("ReadThrottleEvents", "WriteThrottleEvents"):
        assert {d["TableName"] for _, name, d in graphed if name == metric} == tables


def test_the_api_is_graphed_on_the_chalice_api(body: dict[str, Any]) -> None:
    api = {"ApiName": "fenxiao", "Stage": "api"}
    graphed = [(name, dims) for _, name, dims in widget_metrics(_widget(body, "API requests and errors"))]
    assert graphed == [(m, api) for m in ("Count", "4XXError", "5XXError")]


def test_every_job_shows_its_last_success_age(body: dict[str, Any]) -> None:
    widget = _widget(body, "Scheduled jobs: minutes since last success")
    jobs = {d["job"] for _, name, d in widget_metrics(widget) if name == "JobSucceeded"}
    assert jobs == set(dashboard.job_periods())
    expressions = [row[0]["expression"] for row in widget["properties"]["metrics"] if "expression" in row[0]]
    assert len(expressions) == len(jobs)
    assert all("EPOCH" in e and "REPEAT" in e for e in expressions)


def test_every_alarm_is_on_the_dashboard(template: dict[str, Any], body: dict[str, Any]) -> None:
    widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert set(widget["properties"]["alarms"]) == {f"<{name}.Arn>" for name in of_type(template, ALARM)}


def test_the_body_names_no_dynamic_label_cloudformation_would_take_for_a_reference(template: dict[str, Any]) -> None:
    raw = template["Resources"][dashboard.DASHBOARD]["Properties"]["DashboardBody"]["Fn::Sub"]
    for ref in re.findall(r"\$\{([^}]+)\}", raw):
        assert ref in PSEUDO or ref.partition(".")[0] in template["Resources"], ref


# --- the alarms ----------------------------------------------------------------------------------


def runbook_sections() -> dict[str, str]:
    text = (ROOT / "infra" / "RUNBOOK.md").read_text("utf-8")
    parts = re.split(r'<a id="([a-z0-9-]+)"></a>\n', text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alarm_has_a_runbook_entry(template: dict[str, Any]) -> None:
    sections = runbook_sections()
    for name, alarm in of_type(template, ALARM).items():
        match = re.search(r"Runbook: infra/RUNBOOK\.md#([a-z0-9-]+)$", alarm["Properties"]["AlarmDescription"])
        assert match, f"{name}: its description names no runbook entry"
        section = sections.get(match.group(1))
        assert section, f"{name}: infra/RUNBOOK.md has no entry {match.group(1)!r}"
        for part in ("**What it means.**", "**What to check.**", "**What to do.**"):
            assert part in section, f"runbook entry {match.group(1)} lacks {part}"


def test_every_runbook_entry_serves_an_alarm(template: dict[str, Any]) -> None:
    named = {
        m.group(1)
        for alarm in of_type(template, ALARM).values()
        if (m := re.search(r"#([a-z0-9-]+)$", alarm["Properties"]["AlarmDescription"]))
    }
    tools = {name for name in runbook_sections() if name.startswith("tool-")}  # how-tos the entries link to
    assert set(runbook_sections()) - tools == named


def test_every_alarm_on_an_app_metric_watches_an_emitted_one_and_notifies(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    alarms = of_type(template, ALARM)
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert unemitted(alarm_metrics(props, resources)) == [], name
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        if "Metrics" in props:
            assert len([q for q in props["Metrics"] if "MetricStat" in q]) <= dashboard.MAX_ALARM_METRICS
            assert [q["Id"] for q in props["Metrics"] if q.get("ReturnData")] == ["total"]


@pytest.mark.parametrize("job", sorted(dashboard.job_periods()))
def test_a_job_is_alarmed_when_it_fails_or_stops_succeeding(template: dict[str, Any], job: str) -> None:
    period = dashboard.job_periods()[job]
    by_metric: dict[str, dict[str, Any]] = {}
    for alarm in of_type(template, ALARM).values():
        props = alarm["Properties"]
        if props.get("Namespace") == dashboard.NAMESPACE and props["Dimensions"][1:] == [{"Name": "job", "Value": job}]:
            by_metric[props["MetricName"]] = props
    stale, failed = by_metric["JobSucceeded"], by_metric["JobFailed"]
    assert (stale["Period"], stale["EvaluationPeriods"], stale["DatapointsToAlarm"]) == (period, 2, 2)
    assert stale["TreatMissingData"] == "breaching"
    assert (stale["ComparisonOperator"], stale["Threshold"]) == ("LessThanThreshold", 1)
    assert (failed["ComparisonOperator"], failed["Threshold"]) == ("GreaterThanThreshold", 0)


def test_every_job_of_the_queue_is_alarmed_when_it_fails(template: dict[str, Any]) -> None:
    failing = {
        props["Dimensions"][1]["Value"]
        for alarm in of_type(template, ALARM).values()
        if (props := alarm["Properties"]).get("MetricName") == "JobFailed"
    }
    assert failing == set(dashboard.jobs())
    assert set(dashboard.job_periods()) <= failing


@pytest.mark.parametrize(
    "metric",
    ["CommissionFailures", "PayoutsFailed", "ReconciliationMismatches", "EventsParked", "ParkedEventsWaiting"],
)
def test_money_and_commission_trouble_is_alarmed(template: dict[str, Any], metric: str) -> None:
    assert any(a["Properties"].get("MetricName") == metric for a in of_type(template, ALARM).values())


@pytest.mark.parametrize(
    ("namespace", "metric"), [("AWS/Lambda", "Throttles"), ("AWS/DynamoDB", "WriteThrottleEvents")]
)
def test_throttles_are_alarmed_for_every_function_and_table(
    template: dict[str, Any], namespace: str, metric: str
) -> None:
    resources = template["Resources"]
    watched = {
        next(iter(dims.values()))
        for alarm in of_type(template, ALARM).values()
        for ns, name, dims in alarm_metrics(alarm["Properties"], resources)
        if (ns, name) == (namespace, metric)
    }
    if namespace == "AWS/Lambda":
        kinds = of_type(template, "AWS::Serverless::Function").values()
        wanted = {value(r["Properties"]["FunctionName"], resources) for r in kinds}
    else:
        wanted = {r["Properties"]["TableName"] for r in of_type(template, "AWS::DynamoDB::Table").values()}
    assert watched == wanted


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(10 minutes)", 600), ("rate(1 hour)", 3600), ("rate(2 days)", 172_800), ("cron(30 16 * * ? *)", 86_400)],
)
def test_schedule_periods(expression: str, seconds: int) -> None:
    assert dashboard.schedule_seconds(expression) == seconds


def test_a_schedule_it_cannot_read_fails_loudly() -> None:
    with pytest.raises(ValueError, match="cannot tell the period"):
        dashboard.schedule_seconds("cron(0 2 ? * MON *)")


# --- the emissions the dashboard relies on --------------------------------------------------------


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_the_job_runner_counts_successes_and_failures_per_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chalicelib.services import jobs

    def fine(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
        return {"tenant": tenant}

    def broken(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setitem(jobs.JOBS, "settle", fine)
    monkeypatch.setitem(jobs.JOBS, "auto_receipt", broken)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    assert jobs.run_for_tenant("settle", "t1", actor="system:settle", now=now) == {"tenant": "t1"}
    with pytest.raises(RuntimeError):
        jobs.run_for_tenant("auto_receipt", "t1", actor="system:auto_receipt", now=now)

    blobs = _emf(capsys.readouterr().out)
    counted = {(name, blob["job"]) for blob in blobs for name in ("JobSucceeded", "JobFailed") if name in blob}
    assert counted == {("JobSucceeded", "settle"), ("JobFailed", "auto_receipt")}
    for blob in blobs:
        assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "job"]]


def test_commission_is_counted_per_level_for_earning_lines_only(capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.ledger import LedgerLine, LedgerWrite
    from chalicelib.services.commissions import _count_commission

    at = datetime(2026, 1, 1, tzinfo=UTC)

    def line(level: int, event: str, fen: int) -> LedgerLine:
        return LedgerLine("t1", f"p{level}", "o1", level, event, fen, "pending", "b1", {}, at)

    write = LedgerWrite(order_id="o1", new_lines=[line(1, "paid", 300), line(2, "paid", 200), line(1, "refund", -50)])
    _count_commission(write)
    blobs = _emf(capsys.readouterr().out)
    assert sorted((b["level"], b["CommissionFen"]) for b in blobs) == [("1", [300.0]), ("2", [200.0])]
