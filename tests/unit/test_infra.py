"""The prod merge template and IAM policy against the app, its models and its config.

`chalice package` plus cfn-lint (`make package`) catch template syntax; these tests catch what
they cannot: a stream handler without partial-batch failures or a dead-letter destination, a
handler renamed so the merge patches a function that no longer exists, a table drifting from
its model, a function without its secrets (IAM, log groups and the packaged template:
tests/unit/test_iam.py). (cfn-lint 1.58 validates SAM event properties loosely: a misspelt
`FunctionResponseType` passes it.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from chalice.app import (
    CloudWatchEventConfig,
    DynamoDBEventConfig,
    KinesisEventConfig,
    S3EventConfig,
    ScheduledEventConfig,
    SNSEventConfig,
    SQSEventConfig,
)
from chalice.utils import to_cfn_resource_name

from app import app
from infra import check_tables

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MERGE = check_tables.load_json(ROOT / "infra" / "merge-prod.json")
CONFIG = check_tables.load_json(ROOT / ".chalice" / "config.json")
PREFIX = check_tables.stage_table_prefix("prod")
RESOURCES: dict[str, Any] = MERGE["Resources"]
SECRETS = ("JWT_SECRET", "WECHAT_APP_SECRETS")
POLICY = check_tables.load_json(ROOT / ".chalice" / CONFIG["iam_policy_file"])
MAX_RETRIES = 10

# Suffix Chalice appends to a handler's name to name its event (chalice/deploy/appgraph.py).
EVENT_SUFFIX = {
    DynamoDBEventConfig: "-dynamodb-event-source",
    SQSEventConfig: "-sqs-event-source",
    KinesisEventConfig: "-kinesis-event-source",
    SNSEventConfig: "-sns-subscription",
    S3EventConfig: "-s3event",
    CloudWatchEventConfig: "-event",
    ScheduledEventConfig: "-event",
}

STREAM_SOURCES = [s for s in app.event_sources if isinstance(s, DynamoDBEventConfig)]
SQS_SOURCES = [s for s in app.event_sources if isinstance(s, SQSEventConfig)]


def _event_suffix(source: object) -> str:
    for kind, suffix in EVENT_SUFFIX.items():
        if isinstance(source, kind):
            return suffix
    raise AssertionError(f"{type(source).__name__}: teach tests/unit/test_infra.py how Chalice names it")


def chalice_functions() -> dict[str, set[str]]:
    """CloudFormation name of every function `chalice package` generates -> its event names."""
    assert not app.websocket_handlers, "websocket handlers: teach test_infra.py their resource names"
    functions: dict[str, set[str]] = {}
    if app.routes:
        functions["APIHandler"] = set()
    for pure in app.pure_lambda_functions:
        functions[to_cfn_resource_name(pure.name)] = set()
    for source in app.event_sources:
        functions.setdefault(to_cfn_resource_name(source.name), set()).add(
            to_cfn_resource_name(source.name + _event_suffix(source))
        )
    return functions


def event_properties(source: DynamoDBEventConfig | SQSEventConfig) -> dict[str, Any]:
    function = to_cfn_resource_name(source.name)
    event = to_cfn_resource_name(source.name + _event_suffix(source))
    try:
        props: dict[str, Any] = RESOURCES[function]["Properties"]["Events"][event]["Properties"]
    except KeyError:
        pytest.fail(f"infra/merge-prod.json has no Resources.{function}.Properties.Events.{event}.Properties")
    return props


def get_att(value: object, attribute: str) -> str:
    """The resource a `{"Fn::GetAtt": [resource, attribute]}` points at."""
    assert isinstance(value, dict), f"want Fn::GetAtt {attribute}, got {value!r}"
    target, att = value["Fn::GetAtt"]
    assert att == attribute
    return str(target)


def resources_of(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in RESOURCES.items() if res.get("Type") == kind}


def alarms_on(metric: str, dimension: str, value: object) -> list[str]:
    return [
        name
        for name, res in resources_of("AWS::CloudWatch::Alarm").items()
        if res["Properties"].get("MetricName") == metric
        and {"Name": dimension, "Value": value} in res["Properties"].get("Dimensions", [])
        and res["Properties"].get("AlarmActions")
    ]


def assert_dead_letter(props: dict[str, Any]) -> None:
    queue = get_att(props["DestinationConfig"]["OnFailure"]["Destination"], "Arn")
    assert RESOURCES[queue]["Type"] == "AWS::SQS::Queue"
    assert RESOURCES[queue]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert alarms_on("ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": [queue, "QueueName"]})


# --- event sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", STREAM_SOURCES, ids=lambda s: s.name)
def test_stream_handler_reports_partial_failures_and_dead_letters(source: DynamoDBEventConfig) -> None:
    props = event_properties(source)

    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    # The app parks a record that keeps failing with its content (chalicelib/parking.py), so poison
    # never blocks a shard; Lambda's own retries only see whole invocations failing (a crash, a
    # timeout, a bad deploy). Those are retried until fixed (IteratorAge alarms) rather than sent
    # to the dead-letter queue as a bare shard range after a few tries: their content would be lost.
    assert props["MaximumRetryAttempts"] == -1
    assert props["MaximumRecordAgeInSeconds"] == -1
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert_dead_letter(props)


@pytest.mark.parametrize("source", STREAM_SOURCES, ids=lambda s: s.name)
def test_stream_comes_from_the_table_named_in_the_decorator(source: DynamoDBEventConfig) -> None:
    # Given the placeholder ARN in app.py names the table (".../table/users/stream/...")
    logical = source.stream_arn.split(":table/", 1)[1].split("/", 1)[0]
    # When the merge replaces it with the real stream
    table = get_att(event_properties(source)["Stream"], "StreamArn")
    # Then that is the table's stream, and the table has one
    assert RESOURCES[table]["Properties"]["TableName"] == f"{PREFIX}-{logical}"
    assert RESOURCES[table]["Properties"]["StreamSpecification"]["StreamViewType"]


@pytest.mark.parametrize("source", STREAM_SOURCES, ids=lambda s: s.name)
def test_stream_handler_has_an_iterator_age_alarm(source: DynamoDBEventConfig) -> None:
    assert alarms_on("IteratorAge", "FunctionName", {"Ref": to_cfn_resource_name(source.name)})


def test_queue_handlers_report_partial_failures() -> None:
    assert SQS_SOURCES, "the payout worker is an SQS handler"
    for source in SQS_SOURCES:
        assert event_properties(source)["FunctionResponseTypes"] == ["ReportBatchItemFailures"], source.name


@pytest.mark.parametrize("source", SQS_SOURCES, ids=lambda s: s.name)
def test_queue_handler_reads_a_queue_that_dead_letters_and_outlives_its_timeout(source: SQSEventConfig) -> None:
    # Given the placeholder ARN in app.py names the queue (".../payouts")
    logical = str(source.queue_arn).rsplit(":", 1)[-1]
    props = event_properties(source)
    queue = RESOURCES[get_att(props["Queue"], "Arn")]["Properties"]
    assert queue["QueueName"] == f"{PREFIX}-{logical}"
    assert props["BatchSize"] == source.batch_size
    assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
    # AWS asks for a visibility timeout of at least six times the function's timeout
    timeout = CONFIG["stages"]["prod"]["lambda_functions"][source.name]["lambda_timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    redrive = queue["RedrivePolicy"]
    assert 1 < redrive["maxReceiveCount"] <= MAX_RETRIES
    dead = get_att(redrive["deadLetterTargetArn"], "Arn")
    assert RESOURCES[dead]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert alarms_on("ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": [dead, "QueueName"]})
    assert alarms_on(
        "ApproximateAgeOfOldestMessage", "QueueName", {"Fn::GetAtt": [get_att(props["Queue"], "Arn"), "QueueName"]}
    )


@pytest.mark.parametrize("function", ["APIHandler", "RunTenantJob"])
def test_functions_running_the_payout_run_know_the_queue(function: str) -> None:
    # an owner runs it through POST /v1/admin/jobs/payout_run/run; the schedule's runs are queued jobs
    assert RESOURCES[function]["Properties"]["Environment"]["Variables"]["PAYOUT_QUEUE_URL"] == {"Ref": "PayoutQueue"}


def test_merge_patches_only_functions_and_events_chalice_generates() -> None:
    # A renamed handler would leave a typeless fragment that fails at deploy, and its
    # new function would silently miss the settings.
    from infra.iam import role_name

    functions = chalice_functions()
    for function in list(functions):
        functions[role_name(function)] = set()  # infra/iam.py replaces each role's policy
    if app.routes:
        functions["RestAPI"] = set()
    for name, resource in RESOURCES.items():
        if "Type" in resource:
            continue
        assert name in functions, f"merge patches {name}, which chalice does not generate: {sorted(functions)}"
        events = set(resource.get("Properties", {}).get("Events", {}))
        assert events <= functions[name], f"{name}: merge patches events {events - functions[name]}"


# --- functions -------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(chalice_functions()))
def test_every_function_names_its_secrets_and_holds_none(function: str) -> None:
    from chalicelib.settings import SECRET_FIELDS

    variables = RESOURCES.get(function, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})

    # secrets are read at cold start from the sources SECRETS_ID names (chalicelib/secrets.py), never
    # resolved into the environment, where lambda:GetFunctionConfiguration would show them
    assert variables.get("SECRETS_ID", "").startswith("fenxiao/prod/"), (
        f"infra/merge-prod.json: Resources.{function}.Properties.Environment.Variables.SECRETS_ID is missing"
    )
    assert not {name.upper() for name in SECRET_FIELDS} & set(variables)
    assert "{{resolve:" not in json.dumps(variables)
    assert variables.get("PUBLIC_BASE_URL") == {"Ref": "PublicBaseUrl"}


def test_no_secret_is_written_in_the_chalice_config() -> None:
    stages = [CONFIG, *CONFIG["stages"].values()]
    for stage in stages:
        assert not set(SECRETS) & set(stage.get("environment_variables", {}))


def test_local_stage_leaves_endpoints_to_the_launcher() -> None:
    # `chalice local` copies these over the process environment
    local = CONFIG["stages"]["local"]["environment_variables"]
    assert not {"TABLE_PREFIX", "DYNAMODB_ENDPOINT", "AWS_ENDPOINT_URL"} & set(local)
    assert local["WECHAT_MODE"] == "sandbox"


def test_prod_stage_is_live_traced_and_uses_the_policy_file() -> None:
    prod = CONFIG["stages"]["prod"]
    assert CONFIG["autogen_policy"] is False
    assert prod["api_gateway_endpoint_type"] == "REGIONAL"  # AWS China has no edge-optimized endpoints
    assert prod["xray"] is True
    assert prod["environment_variables"]["WECHAT_MODE"] == "live"
    assert prod["environment_variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"


def test_api_5xx_alarm_watches_the_chalice_api() -> None:
    # API Gateway names the REST API after the OpenAPI title, which Chalice sets to app_name
    stage = CONFIG["stages"]["prod"].get("api_gateway_stage", "api")
    dimensions = [{"Name": "ApiName", "Value": app.app_name}, {"Name": "Stage", "Value": stage}]
    assert any(
        res["Properties"].get("MetricName") == "5XXError" and res["Properties"]["Dimensions"] == dimensions
        for res in resources_of("AWS::CloudWatch::Alarm").values()
    )


# --- tables ----------------------------------------------------------------------------------


def test_tables_match_the_models() -> None:
    assert check_tables.drift(MERGE, PREFIX) == []


@pytest.mark.parametrize("name", sorted(resources_of("AWS::DynamoDB::Table")))
def test_table_has_point_in_time_recovery_and_is_retained(name: str) -> None:
    table = RESOURCES[name]
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def _mutated(change: str) -> dict[str, Any]:
    template = copy.deepcopy(MERGE)
    res = template["Resources"]
    if change == "stream":
        del res["UsersTable"]["Properties"]["StreamSpecification"]
    elif change == "projection":
        res["UsersTable"]["Properties"]["GlobalSecondaryIndexes"][0]["Projection"]["NonKeyAttributes"].pop()
    elif change == "index":
        del res["AuditTable"]["Properties"]["GlobalSecondaryIndexes"]
    elif change == "key":
        res["AuditTable"]["Properties"]["KeySchema"].pop()
    elif change == "missing":
        del res["TenantsTable"]
    elif change == "extra":
        res["OrphanTable"] = copy.deepcopy(res["SharesTable"])
        res["OrphanTable"]["Properties"]["TableName"] = f"{PREFIX}-orphan"
    elif change == "pitr":
        res["SharesTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] = False
    elif change == "ttl":
        res["NoncesTable"]["Properties"]["TimeToLiveSpecification"]["Enabled"] = False
    return template


@pytest.mark.parametrize("change", ["stream", "projection", "index", "key", "missing", "extra", "pitr", "ttl"])
def test_check_tables_reports_drift(change: str) -> None:
    assert check_tables.drift(_mutated(change), PREFIX)


def test_check_tables_exits_non_zero_on_drift(tmp_path: Path) -> None:
    drifted = tmp_path / "merge.json"
    drifted.write_text(json.dumps(_mutated("projection")), encoding="utf-8")

    assert check_tables.main([str(drifted)]) == 1
    assert check_tables.main([]) == 0


# --- IAM (the roles themselves: tests/unit/test_iam.py) ----------------------------------------


def test_the_chalice_policy_file_denies_everything() -> None:
    # infra/iam.py replaces every role's policy in the merge; a role it missed fails closed
    assert POLICY["Statement"] == [
        {"Sid": "RolesAreBuiltByInfraIamPy", "Effect": "Deny", "Action": "*", "Resource": "*"}
    ]


# --- parked stream records -------------------------------------------------------------------


def _metric_alarms(metric: str) -> list[dict[str, Any]]:
    return [
        res["Properties"]
        for res in resources_of("AWS::CloudWatch::Alarm").values()
        if res["Properties"].get("MetricName") == metric
    ]


@pytest.mark.parametrize(
    "metric",
    [
        "EventsParked",
        "ParkedEventsWaiting",
        "RefundsFailed",
        "RefundsUnknown",
        "PaymentMismatches",
        "ReconciliationMismatches",
        "PayoutsAbandoned",
        "PayoutsWithoutPackage",
    ],
)
def test_money_trouble_is_alarmed_on_the_metric_the_app_emits(metric: str) -> None:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    # the app counts it (a renamed metric would leave its alarm silent)
    source = "\n".join(path.read_text("utf-8") for path in (ROOT / "chalicelib").rglob("*.py"))
    assert f'"{metric}"' in source, f"the app never emits {metric}"

    # Given the metric as the app emits it in prod (observability.py: namespace and service dimension)
    env = CONFIG["stages"]["prod"]["environment_variables"]
    emitted = Metrics(namespace=env["POWERTOOLS_METRICS_NAMESPACE"], service=env["POWERTOOLS_SERVICE_NAME"])
    emitted.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    blob: dict[str, Any] = dict(emitted.serialize_metric_set())
    emitted.clear_metrics()
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    dimensions = [{"Name": name, "Value": blob[name]} for name in directive["Dimensions"][0]]

    # Then an alarm watches exactly that metric and notifies someone
    alarms = _metric_alarms(metric)
    assert alarms, f"no alarm on {metric}"
    for alarm in alarms:
        assert alarm["Namespace"] == directive["Namespace"]
        assert alarm["Dimensions"] == dimensions
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Threshold"] == 0
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_parked_table_keeps_records_with_point_in_time_recovery() -> None:
    tables = check_tables.template_tables(MERGE)
    _, resource, spec = tables[f"{PREFIX}-parked"]
    assert resource["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert spec["ttl"] == "expires_at"  # failed-delivery counters expire; parked records carry no expiry
    assert "by_state" in spec["gsis"]


@pytest.mark.parametrize("source", STREAM_SOURCES, ids=lambda s: s.name)
def test_records_are_parked_before_lambda_gives_up_on_them(source: DynamoDBEventConfig) -> None:
    from chalicelib.parking import PARK_AFTER

    # Lambda delivers a failing record 1 + MaximumRetryAttempts times (-1: until the record expires)
    retries = event_properties(source)["MaximumRetryAttempts"]
    assert retries == -1 or 1 + retries > PARK_AFTER


def test_parked_records_are_redriven_on_a_schedule() -> None:
    from chalicelib.services import jobs

    schedules = {s.name: s for s in app.event_sources if isinstance(s, ScheduledEventConfig)}
    assert "redrive_parked" in schedules
    assert "redrive_parked" in jobs.JOBS


@pytest.mark.parametrize(
    ("response_type", "status"),
    [("MISSING_AUTHENTICATION_TOKEN", "404"), ("DEFAULT_4XX", "400"), ("THROTTLED", "429"),
     ("REQUEST_TOO_LARGE", "413"), ("DEFAULT_5XX", "502")],
)  # fmt: skip
def test_api_gateways_own_errors_answer_our_error_shape_and_echo_nothing(response_type: str, status: str) -> None:
    responses = [
        res["Properties"]
        for res in resources_of("AWS::ApiGateway::GatewayResponse").values()
        if res["Properties"]["ResponseType"] == response_type
    ]
    assert len(responses) == 1, response_type
    response = responses[0]
    assert response["RestApiId"] == {"Ref": "RestAPI"}
    assert response["StatusCode"] == status
    body = response["ResponseTemplates"]["application/json"]
    assert "$" not in body  # no $context.error.messageString: API Gateway's messages can echo the caller's token
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["code"] and error["message"]


def test_the_api_stage_is_throttled() -> None:
    # a flood is refused by API Gateway (429, our error shape) before it reaches Lambda or DynamoDB
    [settings] = RESOURCES["RestAPI"]["Properties"]["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert 0 < settings["ThrottlingRateLimit"] <= settings["ThrottlingBurstLimit"]
