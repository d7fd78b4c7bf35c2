"""The packaged template (`chalice package` with the merge), resolved for AWS China: every ARN in the
`aws-cn` partition, every DynamoDB / SQS call the code makes allowed for the function that makes
it and little else, secrets per function, log groups with retention, a regional API with access logs.

The calls come from a scan of chalicelib/store (infra/iam.py: a call it cannot classify fails),
the functions' reach from `infra.iam.FUNCTIONS`; the policies are read from the packaged template,
so a stale merge, a role Chalice renamed or a literal `arn:aws:` all fail here.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import SECRET_FIELDS
from infra import iam

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PSEUDO = {"AWS::Partition": "aws-cn", "AWS::Region": "cn-north-1", "AWS::AccountId": "123456789012"}
PSEUDO["AWS::StackName"] = "fenxiao-prod"
LINT_REGIONS = ("cn-north-1", "cn-northwest-1", "ap-east-1", "us-east-1")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "AWS_DEFAULT_REGION": "cn-north-1"}
    cmd = [str(ROOT / ".venv" / "bin" / "chalice"), "package", "--stage", "prod"]
    cmd += ["--merge-template", "infra/merge-prod.json", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    data: dict[str, Any] = json.loads((out / "sam.json").read_text("utf-8"))
    return data


def resolve(value: Any, resources: dict[str, Any]) -> str:
    """An ARN-valued template expression as it would be in cn-north-1."""
    if isinstance(value, str):
        return value
    if "Fn::GetAtt" in value:
        name, attribute = value["Fn::GetAtt"]
        return _attribute(name, attribute, resources)
    if "Fn::Sub" in value:
        text = value["Fn::Sub"]
        assert isinstance(text, str)

        def sub(match: re.Match[str]) -> str:
            ref = match.group(1)
            if ref in PSEUDO:
                return PSEUDO[ref]
            name, _, attribute = ref.partition(".")
            return _attribute(name, attribute, resources)

        return re.sub(r"\$\{([^}]+)\}", sub, text)
    raise AssertionError(f"cannot resolve {value!r}")


def _attribute(name: str, attribute: str, resources: dict[str, Any]) -> str:
    resource = resources[name]
    kind, props = resource["Type"], resource.get("Properties", {})
    base = "arn:aws-cn:{}:cn-north-1:123456789012:{}"
    if kind == "AWS::DynamoDB::Table":
        table = base.format("dynamodb", f"table/{props['TableName']}")
        return table if attribute == "Arn" else f"{table}/stream/2026-01-01T00:00:00.000"
    if kind == "AWS::SQS::Queue":
        return base.format("sqs", props["QueueName"])
    if kind == "AWS::Logs::LogGroup":
        return base.format("logs", f"log-group:{resolve(props['LogGroupName'], resources)}:*")
    if kind == "AWS::IAM::Role":
        return f"arn:aws-cn:iam::123456789012:role/{name}"
    if kind == "AWS::S3::Bucket":
        return f"arn:aws-cn:s3:::{name.lower()}"
    raise AssertionError(f"GetAtt {name}.{attribute} of {kind}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Policy:
    def __init__(self, role: dict[str, Any], resources: dict[str, Any]) -> None:
        self.statements = [
            (s["Effect"], _as_list(s["Action"]), [resolve(r, resources) for r in _as_list(s["Resource"])])
            for p in role["Properties"]["Policies"]
            for s in p["PolicyDocument"]["Statement"]
        ]

    def allows(self, action: str, arn: str) -> bool:
        def matches(actions: list[str], arns: list[str]) -> bool:
            return any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
                fnmatch.fnmatchcase(arn, r) for r in arns
            )

        if any(effect == "Deny" and matches(a, r) for effect, a, r in self.statements):
            return False
        return any(effect == "Allow" and matches(a, r) for effect, a, r in self.statements)


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def policy_of(template: dict[str, Any], function: str) -> Policy:
    resources = template["Resources"]
    role = functions(template)[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return Policy(resources[role], resources)


def table_arn(template: dict[str, Any], table: str) -> str:
    return _attribute(table, "Arn", template["Resources"])


# --- partition ---------------------------------------------------------------------------------


def test_no_arn_names_a_partition(template: dict[str, Any]) -> None:
    text = json.dumps(template)
    assert not re.search(r"arn:aws[-a-z]*:", text.replace("arn:${AWS::Partition}:", "")), "a literal partition"


def test_every_policy_arn_resolves_in_the_china_partition(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    roles = [r for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) >= len(functions(template))
    for role in roles:
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            assert resolve(arn, resources).startswith("arn:aws-cn:iam::aws:policy/")
        statements = Policy(role, resources).statements if role["Properties"].get("Policies") else []
        for _, _, arns in statements:
            for arn in arns:
                assert arn == "*" or arn.startswith("arn:aws-cn:"), arn


# --- least privilege ---------------------------------------------------------------------------


def test_every_function_has_a_reach(template: dict[str, Any]) -> None:
    assert set(functions(template)) == set(iam.FUNCTIONS), "new function: describe its reach in infra/iam.py"


def test_the_scan_covers_every_table_the_code_names(template: dict[str, Any]) -> None:
    scanned = iam.scan_store()
    tables = {pair.split(" ")[0] for pairs, _ in scanned.values() for pair in pairs}
    missing = sorted(t for t in tables if t not in template["Resources"])
    assert not missing, f"the code calls tables the stack does not have: {missing}"


@pytest.mark.parametrize("function", sorted(iam.FUNCTIONS))
def test_every_dynamodb_call_of_a_function_is_allowed(template: dict[str, Any], function: str) -> None:
    policy = policy_of(template, function)
    wanted = iam.table_actions(iam.FUNCTIONS[function], iam.scan_store())
    assert wanted
    for table, actions in wanted.items():
        if table not in template["Resources"]:
            continue  # test_the_scan_covers_every_table_the_code_names says so
        arn = table_arn(template, table)
        for action in actions:
            assert policy.allows(action, arn), f"{function}: {action} on {table}"
            if action == "dynamodb:Query":
                assert policy.allows(action, f"{arn}/index/some_index"), f"{function}: Query on {table} indexes"


@pytest.mark.parametrize("function", sorted(iam.FUNCTIONS))
def test_a_function_gets_nothing_beyond_its_reach(template: dict[str, Any], function: str) -> None:
    policy = policy_of(template, function)
    wanted = iam.table_actions(iam.FUNCTIONS[function], iam.scan_store())
    for table in [n for n, r in template["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"]:
        arn = table_arn(template, table)
        for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchWriteItem"):
            if f"dynamodb:{action}" not in wanted.get(table, set()):
                assert not policy.allows(f"dynamodb:{action}", arn), f"{function}: {action} on {table}"
    for _, actions, arns in policy.statements:
        assert not [a for a in actions if "*" in a]
        assert arns != ["*"] or actions == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


def test_the_schedules_only_fan_out() -> None:
    # every schedule is `jobs.fan_out(name)`: read the tenants, queue one run each
    source = (ROOT / "app.py").read_text("utf-8")
    for function, reach in iam.FUNCTIONS.items():
        if reach is iam.FAN_OUT:
            handler = re.sub(r"(?<!^)([A-Z])", r"_\1", function).lower()
            assert re.search(
                rf"def {handler}\(event: Any\) -> dict\[str, Any\]:\n.*\n    return jobs\.fan_out\(", source
            )


@pytest.mark.parametrize("function", sorted(iam.FUNCTIONS))
def test_queues_and_streams_are_allowed(template: dict[str, Any], function: str) -> None:
    policy, reach, resources = policy_of(template, function), iam.FUNCTIONS[function], template["Resources"]
    for queue in reach.send:
        assert policy.allows("sqs:SendMessage", _attribute(queue, "Arn", resources))
    if reach.consume:
        for action in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"):
            assert policy.allows(f"sqs:{action}", _attribute(reach.consume, "Arn", resources)), action
    if reach.stream:
        stream = _attribute(reach.stream, "StreamArn", resources)
        for action in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams"):
            assert policy.allows(f"dynamodb:{action}", stream), action
    other = [q for q, r in resources.items() if r["Type"] == "AWS::SQS::Queue" and q not in reach.send]
    for queue in other:
        assert not policy.allows("sqs:SendMessage", _attribute(queue, "Arn", resources)), queue


def test_the_audit_trail_stays_append_only_for_every_function(template: dict[str, Any]) -> None:
    audit = table_arn(template, "AuditTable")
    for function in functions(template):
        policy = policy_of(template, function)
        for action in ("UpdateItem", "DeleteItem", "BatchWriteItem"):
            assert not policy.allows(f"dynamodb:{action}", audit), (function, action)


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(iam.FUNCTIONS))
def test_a_function_reads_only_its_secrets_and_holds_none(template: dict[str, Any], function: str) -> None:
    variables = functions(template)[function]["Properties"]["Environment"]["Variables"]
    assert not {name.upper() for name in SECRET_FIELDS} & set(variables)
    assert "{{resolve:" not in json.dumps(variables)
    ids = variables["SECRETS_ID"].split(",")
    policy = policy_of(template, function)
    for group in ("app", "wechatpay", "merchant"):
        name = f"{iam.SECRET_PREFIX}/{group}"
        arn = f"arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:{name}-AbC123"
        assert policy.allows("secretsmanager:GetSecretValue", arn) == (name in ids), (function, group)


def test_only_functions_calling_wechat_pay_read_its_keys() -> None:
    pay = {f for f, reach in iam.FUNCTIONS.items() if "wechatpay" in reach.secrets}
    assert pay == {"APIHandler", "SendPayout", "RunTenantJob"}


# --- logs and the API --------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(iam.FUNCTIONS))
def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any], function: str) -> None:
    resources = template["Resources"]
    name = resolve(functions(template)[function]["Properties"]["FunctionName"], resources)
    groups = {
        resolve(r["Properties"]["LogGroupName"], resources): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    assert groups[f"/aws/lambda/{name}"]["RetentionInDays"] >= 180
    policy = policy_of(template, function)
    own = f"arn:aws-cn:logs:cn-north-1:123456789012:log-group:/aws/lambda/{name}:log-stream:x"
    assert policy.allows("logs:PutLogEvents", own)
    assert not policy.allows("logs:PutLogEvents", own.replace(name, "other"))
    assert not policy.allows("logs:CreateLogGroup", own)  # never a group without retention


def test_the_api_is_regional_with_access_logs(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    api = resources["RestAPI"]
    assert api["Properties"]["EndpointConfiguration"] == "REGIONAL"  # China has no edge endpoints
    setting = api["Properties"]["AccessLogSetting"]
    group = resources[setting["DestinationArn"]["Fn::GetAtt"][0]]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Properties"]["RetentionInDays"] >= 180
    fields = json.loads(setting["Format"])
    assert fields["requestId"] == "$context.requestId" and fields["status"] == "$context.status"
    account = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Account"]
    assert len(account) == 1
    assert "ApiGatewayAccount" in _as_list(api.get("DependsOn", []))


@pytest.mark.parametrize("region", LINT_REGIONS)
def test_every_resource_type_exists_in_the_region(template: dict[str, Any], region: str) -> None:
    import cfnlint

    providers = Path(cfnlint.__file__).parent / "data" / "schemas" / "providers" / f"{region}.json"
    available = set(json.loads(providers.read_text("utf-8")))
    kinds = {r["Type"] for r in template["Resources"].values() if not r["Type"].startswith("AWS::Serverless::")}
    # what SAM expands the serverless resources into
    kinds |= {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::Events::Rule"}
    kinds |= {"AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage", "AWS::ApiGateway::Deployment"}
    assert sorted(kinds - available) == []


# --- the generator and its scan ----------------------------------------------------------------


def test_the_merge_template_is_generated_from_the_scan() -> None:
    assert iam.main(["--check"]) == 0, "run `python -m infra.iam`"


@pytest.mark.parametrize("call", ["OrderModel.batch_write()", "client.delete_item(Key={})", "UserModel.exists()"])
def test_a_new_kind_of_call_fails_the_scan(tmp_path: Path, call: str) -> None:
    module = tmp_path / "newstore.py"
    module.write_text(f"def f(client, item):\n    return {call}\n", encoding="utf-8")
    with pytest.raises(iam.ScanError, match="unclassified"):
        iam.scan_module(module, set(iam.table_logical_ids()))


def test_the_scan_tells_class_calls_from_dict_calls(tmp_path: Path) -> None:
    module = tmp_path / "store.py"
    module.write_text(
        "def f(tx, d):\n"
        "    d.get('x'); d.update({}); UserModel.pk.exists()\n"
        "    OrderModel.get('k'); tx.update(AccountModel('k'), actions=[])\n",
        encoding="utf-8",
    )
    named, actions, exact = iam.scan_module(module, set(iam.table_logical_ids()))
    assert named == {"UserModel", "OrderModel", "AccountModel"}
    assert actions == {"dynamodb:UpdateItem"}
    assert exact == {("OrderModel", "dynamodb:GetItem")}


def test_only_the_jobs_worker_writes_export_files_and_the_api_only_reads_them(template: dict[str, Any]) -> None:
    bucket = _attribute("ExportsBucket", "Arn", template["Resources"])
    file = f"{bucket}/exports/wx1/exp-1.csv"
    worker, api = policy_of(template, "RunTenantJob"), policy_of(template, "APIHandler")
    for action in ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:DeleteObject"):
        assert worker.allows(action, file), action
    assert api.allows("s3:GetObject", file)  # it pre-signs the download links
    assert not api.allows("s3:PutObject", file)
    for name in functions(template):
        if name not in ("RunTenantJob", "APIHandler"):
            assert not policy_of(template, name).allows("s3:GetObject", file), name
    bucket_props = template["Resources"]["ExportsBucket"]["Properties"]
    assert all(bucket_props["PublicAccessBlockConfiguration"].values())
    assert bucket_props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 7
    assert bucket_props["BucketEncryption"]["ServerSideEncryptionConfiguration"]


def test_the_api_sampling_rule_names_the_stage_api_gateway_traces() -> None:
    """API Gateway names its X-Ray segments "<API name>/<stage>"; Chalice names the API after the app."""
    import json

    from infra import iam

    config = json.loads((iam.ROOT / ".chalice" / "config.json").read_text("utf-8"))
    stage = config["stages"][iam.STAGE]
    assert f"{config['app_name']}/{stage['api_gateway_stage']}" == iam.API_SERVICE
    template = json.loads(iam.MERGE.read_text("utf-8"))
    rule = template["Resources"]["ApiSamplingRule"]["Properties"]["SamplingRule"]
    assert (rule["ServiceName"], rule["FixedRate"], rule["ReservoirSize"]) == (iam.API_SERVICE, iam.API_TRACE_RATE, 0)
    functions = {
        name: res["Properties"]["Tracing"] for name, res in template["Resources"].items() if name in iam.FUNCTIONS
    }
    assert functions.pop("APIHandler") == "Active"
    assert set(map(json.dumps, functions.values())) == {json.dumps({"Ref": "EventTracing"})}


def test_no_function_reaches_the_command_line_tools_store_modules() -> None:
    # The operators' tools Scan whole tables; no function is granted that, so nothing the app runs
    # may import them: only devtools/ and the tools' own service module do.
    tools = {f"chalicelib.store.{m}" for m in iam.TOOLS_ONLY} | {"chalicelib.services.recount"}
    own = {ROOT / "chalicelib" / "store" / f"{m}.py" for m in iam.TOOLS_ONLY} | {
        ROOT / "chalicelib" / "services" / "recount.py"
    }
    for path in [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]:
        if path in own:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not names & tools, f"{path.relative_to(ROOT)} imports {sorted(names & tools)}"
