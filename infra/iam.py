"""Least-privilege roles, log groups, secrets and tracing for every function, written into the merge template.

Chalice gives each function its own role (`<Function>Role`, `ApiHandlerRole` for the API) with the
document of `.chalice/policy-prod.json`; the merge replaces that role's `Policies` (Chalice's
deep merge replaces lists) with one built here from:

- the DynamoDB actions the code calls: `scan_store()` reads every module of `chalicelib/store`
  and classifies each PynamoDB / boto3 call (a call it cannot classify fails, so a new kind of
  call is looked at), per module: the models it names and the actions it calls;
- which store modules each function reaches (`FUNCTIONS`, kept by hand: the handler's path);
- its queues, stream and secret groups.

Every ARN is `Fn::GetAtt` / `Ref` of a resource in the template or `Fn::Sub` with
`${AWS::Partition}`, so the same template works in `aws` and `aws-cn`. Each function gets a log
group it can write to (and cannot create another: no log group without retention), named by
the function's fixed name `${AWS::StackName}-<Function>`.

Tracing (X-Ray bills per trace recorded): the API stage traces a sampled share of requests under
the stack's own sampling rule (`API_TRACE_RATE`, no reservoir, so a quiet day is not traced in
full) and the API function follows API Gateway's decision; the stream, queue and scheduled
functions, which Lambda would trace at its fixed one-a-second-plus-5 % rule (every invocation at
our volume), trace only when the `EventTracing` parameter is `Active` (default `PassThrough`).
Logs and metrics stay complete either way.

    python -m infra.iam            # rewrite the generated parts of infra/merge-prod.json
    python -m infra.iam --check    # exit 1 when they are stale (tests/unit/test_iam.py does too)
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MERGE = ROOT / "infra" / "merge-prod.json"
STORE = ROOT / "chalicelib" / "store"
STAGE = "prod"
SECRET_PREFIX = f"fenxiao/{STAGE}"
API_TRACE_RATE = 0.05  # share of API requests traced (AWS::XRay::SamplingRule FixedRate)
API_SERVICE = "fenxiao/api"  # API Gateway's X-Ray service name: "<API name>/<stage>" (.chalice/config.json)
LOG_RETENTION_DAYS = 180  # China's Cybersecurity Law (Art. 21): network logs kept at least six months

# PynamoDB / boto3 method -> DynamoDB or SQS action. Names that are no AWS call on some receivers
# (dict.get, dict.update, attribute.exists()) are resolved in `_action`.
CALLS: dict[str, str] = {
    "get": "dynamodb:GetItem",
    "refresh": "dynamodb:GetItem",
    "batch_get": "dynamodb:BatchGetItem",
    "query": "dynamodb:Query",
    "count": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "save": "dynamodb:PutItem",
    "update": "dynamodb:UpdateItem",
    "condition_check": "dynamodb:ConditionCheckItem",
    "send_message_batch": "sqs:SendMessage",
}
# Calls of PynamoDB / boto3 the scan does not classify yet: using one fails `scan_store()`.
UNCLASSIFIED = {
    "delete", "batch_write", "exists", "describe_table", "create_table", "delete_table", "update_ttl",
    "get_item", "put_item", "update_item", "delete_item", "batch_get_item", "batch_write_item",
    "transact_get_items", "transact_write_items", "execute_statement", "send_message", "receive_message",
    "delete_message", "delete_message_batch", "change_message_visibility", "purge_queue", "get_queue_url",
    "get_records", "get_shard_iterator", "describe_stream",
}  # fmt: skip
PUSH_LOGS_POLICY = "AmazonAPIGatewayPushToCloudWatchLogs"
AUDIT_NEVER = ("dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")


@dataclass(frozen=True)
class Function:
    """What one function reaches: store modules (their actions derived), or explicit table actions."""

    store: tuple[str, ...] = ()
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    send: tuple[str, ...] = ()  # queues (logical ids) it sends to
    consume: str | None = None  # the queue its event source reads
    stream: str | None = None  # the table whose stream it reads
    secrets: tuple[str, ...] = ("app",)  # groups, `fenxiao/prod/<group>`
    exports: tuple[str, ...] = ()  # S3 actions on the exports bucket's objects


ALL_STORE = ("*",)
# Store modules only the operators' command-line tools use (devtools/backfill.py, recount.py): they
# Scan whole tables, and no function reaches them (tests/unit/test_iam.py), so `ALL_STORE` leaves
# them out.
TOOLS_ONLY = ("backfill", "recount")
FAN_OUT = Function(store=("queue",), tables={"TenantsTable": ("dynamodb:Scan",)}, send=("JobsQueue",))  # jobs.fan_out
EXPORT_WRITER = ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:DeleteObject")
STREAM = ("plans", "ledger", "orders", "users", "audit", "parked", "catalog", "shares", "shards", "base")

FUNCTIONS: dict[str, Function] = {
    "APIHandler": Function(
        store=ALL_STORE,
        send=("PayoutQueue", "JobsQueue"),
        secrets=("app", "wechatpay", "merchant"),
        exports=("s3:GetObject",),  # pre-signs download links (S3 checks the signer's rights)
    ),
    "OnUserChange": Function(store=STREAM, stream="UsersTable", send=("StreamDeadLetterQueue",)),
    "OnOrderChange": Function(store=STREAM, stream="OrdersTable", send=("StreamDeadLetterQueue",)),
    "RunTenantJob": Function(
        store=tuple(
            m
            for m in (
                "admins",
                "audit",
                "base",
                "catalog",
                "ledger",
                "orders",
                "parked",
                "plans",
                "queue",
                "shards",
                "shares",
                "tenants",
                "users",
                "withdrawals",
                "exports",
                "export_files",
            )
        ),
        send=("PayoutQueue", "JobsQueue"),
        consume="JobsQueue",
        secrets=("app", "wechatpay"),
        exports=EXPORT_WRITER,
    ),
    "SendPayout": Function(
        store=("withdrawals", "audit", "users", "admins", "tenants", "shards", "base"),
        consume="PayoutQueue",
        secrets=("app", "wechatpay"),
    ),
    "SealAudit": FAN_OUT,
    "AutoReceipt": FAN_OUT,
    "Settle": FAN_OUT,
    "PayoutRun": FAN_OUT,
    "ReconcilePayouts": FAN_OUT,
    "ReconcilePayments": FAN_OUT,
    "RedriveParked": FAN_OUT,
}
# Chalice names the API's role differently from the function (chalice/package.py).
API_FUNCTION = "APIHandler"
ROLE_NAMES = {API_FUNCTION: "ApiHandlerRole"}
QUEUE_ENV = {"PayoutQueue": "PAYOUT_QUEUE_URL", "JobsQueue": "JOBS_QUEUE_URL"}


def role_name(function: str) -> str:
    return ROLE_NAMES.get(function, f"{function}Role")


def table_logical_ids() -> dict[str, str]:
    """Model class name -> the table's logical id in the template (`<Logical>Table`)."""
    from chalicelib.store.models import LOGICAL_NAMES

    return {
        model.__name__: "".join(part.title() for part in logical.split("_")) + "Table"
        for model, logical in LOGICAL_NAMES.items()
    }


# --- the scan ----------------------------------------------------------------------------------


class ScanError(ValueError):
    """The store makes a call the scan cannot classify: teach `CALLS` (and the roles) about it."""


def _action(call: ast.Call, models: set[str]) -> str | None:
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    name, receiver = func.attr, func.value
    if name in UNCLASSIFIED:
        if name == "exists" and isinstance(receiver, ast.Attribute):
            return None  # Model.attr.exists(): a condition, no call
        raise ScanError(f"unclassified call .{name}() at line {call.lineno}")
    if name not in CALLS:
        return None
    receiver_name = receiver.id if isinstance(receiver, ast.Name) else None
    if name == "get" and receiver_name not in models:
        return None  # dict.get, os.environ.get; Model.get is a class call
    if name == "update" and receiver_name != "tx" and not any(k.arg == "actions" for k in call.keywords):
        return None  # dict.update / set.update; PynamoDB updates pass actions=
    if name == "count" and receiver_name == "itertools":
        return None
    return CALLS[name]


def _model_of(call: ast.Call, models: set[str]) -> str | None:
    """The model a class-level call is made on (`Model.get`, `Model.index.query`), else None."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    if isinstance(receiver, ast.Attribute):
        receiver = receiver.value
    return receiver.id if isinstance(receiver, ast.Name) and receiver.id in models else None


def scan_module(path: Path, models: set[str]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """(model classes the module names, actions of its item/transaction calls, (model, action) of
    its class-level calls)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in models}
    actions: set[str] = set()
    exact: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            try:
                action = _action(node, models)
            except ScanError as exc:
                raise ScanError(f"{path.name}: {exc}") from None
            model = _model_of(node, models)
            if action and model:
                exact.add((model, action))
            elif action:
                actions.add(action)
    return named, actions, exact


Scanned = dict[str, tuple[set[str], set[str]]]


def scan_store() -> Scanned:
    """Store module stem -> (table logical ids it touches, actions it may call on each of them),
    as `{module: (tables, actions)}`; class-level calls count for their own table only, item and
    transaction calls (whose model is a variable) for every table the module names."""
    tables = table_logical_ids()
    found: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted(STORE.glob("*.py")):
        if path.stem in {"__init__", "models"}:
            continue
        named, actions, exact = scan_module(path, set(tables))
        pairs = {(tables[m], a) for m in named for a in actions} | {(tables[m], a) for m, a in exact}
        sqs = {a for a in actions if a.startswith("sqs:")}
        found[path.stem] = ({f"{t} {a}" for t, a in pairs if a.startswith("dynamodb:")}, sqs)
    return found


def _modules(function: Function, scanned: Scanned) -> tuple[str, ...]:
    if function.store == ALL_STORE:
        return tuple(sorted(set(scanned) - set(TOOLS_ONLY)))
    return function.store


def table_actions(function: Function, scanned: Scanned) -> dict[str, set[str]]:
    """Table logical id -> DynamoDB actions this function may call on it."""
    modules = _modules(function, scanned)
    grants: dict[str, set[str]] = {table: set(actions) for table, actions in function.tables.items()}
    for module in modules:
        for pair in scanned[module][0]:
            table, action = pair.split(" ")
            grants.setdefault(table, set()).add(action)
    audit = grants.get("AuditTable")
    if audit is not None:
        audit.difference_update(AUDIT_NEVER)  # puts with attribute_not_exists only (append-only)
    return {table: actions for table, actions in grants.items() if actions}


def sqs_send(function: Function, scanned: Scanned) -> set[str]:
    modules = _modules(function, scanned)
    calls = set().union(*(scanned[m][1] for m in modules)) if modules else set()
    if function.send and "sqs:SendMessage" not in calls and not function.stream:
        raise ScanError("a function sends to queues but its store modules never call SQS")
    return set(function.send)


# --- the template ------------------------------------------------------------------------------


def _arn(table: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [table, "Arn"]}


def secret_arn(group: str) -> dict[str, Any]:
    # Secrets Manager appends 6 random characters to a secret's ARN
    return {
        "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
        f"{SECRET_PREFIX}/{group}-??????"
    }


def policy(name: str, function: Function, scanned: Scanned, tables: set[str]) -> dict[str, Any]:
    """The role policy of one function; grants on tables missing from the template are left out
    (tests/unit/test_iam.py then fails: the code calls a table the stack does not have)."""
    statements: list[dict[str, Any]] = []
    for table, actions in sorted(table_actions(function, scanned).items()):
        if table not in tables:
            continue
        resources: list[Any] = [_arn(table)]
        if "dynamodb:Query" in actions:
            resources.append({"Fn::Sub": f"${{{table}.Arn}}/index/*"})
        statements.append({"Sid": table, "Effect": "Allow", "Action": sorted(actions), "Resource": resources})
    statements.append(
        {"Sid": "AuditIsAppendOnly", "Effect": "Deny", "Action": list(AUDIT_NEVER), "Resource": [_arn("AuditTable")]}
    )
    if function.stream:
        statements.append({
            "Sid": "ReadStream",
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                       "dynamodb:ListStreams"],
            "Resource": [{"Fn::GetAtt": [function.stream, "StreamArn"]}],
        })  # fmt: skip
    if function.consume:
        statements.append({
            "Sid": "ConsumeQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                       "sqs:ChangeMessageVisibility"],
            "Resource": [_arn(function.consume)],
        })  # fmt: skip
    send = sorted(sqs_send(function, scanned))
    if send:
        statements.append(
            {
                "Sid": "SendToQueues",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": [_arn(q) for q in send],
            }
        )
    if function.exports:
        statements.append(
            {
                "Sid": "ExportFiles",
                "Effect": "Allow",
                "Action": list(function.exports),
                "Resource": [{"Fn::Sub": "${ExportsBucket.Arn}/*"}],
            }
        )
    statements.append({
        "Sid": "ReadSecrets",
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue"],
        "Resource": [secret_arn(group) for group in function.secrets],
    })  # fmt: skip
    statements.append({
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [{"Fn::GetAtt": [f"{name}LogGroup", "Arn"]}],
    })  # fmt: skip
    statements.append(
        {
            "Sid": "XRay",
            "Effect": "Allow",
            "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
            "Resource": "*",
        }
    )
    return {"PolicyName": f"{name}Policy", "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}


def secrets_id(function: Function) -> str:
    return ",".join(f"{SECRET_PREFIX}/{group}" for group in function.secrets)


def generated(tables: set[str], scanned: Scanned | None = None) -> dict[str, dict[str, Any]]:
    """The resources (or parts of Chalice's resources) this module owns in the merge template."""
    scanned = scanned if scanned is not None else scan_store()
    out: dict[str, dict[str, Any]] = {}
    for name, function in FUNCTIONS.items():
        out[role_name(name)] = {"Properties": {"Policies": [policy(name, function, scanned, tables)]}}
        out[f"{name}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{name}"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
    return out


ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "time": "$context.requestTime",
        "method": "$context.httpMethod",
        "path": "$context.resourcePath",
        "status": "$context.status",
        "bytes": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationMs": "$context.integrationLatency",
        "error": "$context.error.responseType",
    },
    separators=(",", ":"),
)  # no headers, query strings or bodies: tokens and openids stay out of the logs


def api_resources() -> dict[str, dict[str, Any]]:
    """The API's access log group and the account setting API Gateway needs to write to it."""
    return {
        "ApiAccessLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": {"Fn::Sub": "/aws/apigateway/${AWS::StackName}-access"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        },
        # REST API logging needs a CloudWatch role in the region's API Gateway account settings
        # (one per account and region: this stack sets it; infra/README.md, "Secrets and IAM").
        "ApiGatewayCloudWatchRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "apigateway.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "ManagedPolicyArns": [
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/" + PUSH_LOGS_POLICY}
                ],
            },
        },
        "ApiGatewayAccount": {
            "Type": "AWS::ApiGateway::Account",
            "Properties": {"CloudWatchRoleArn": {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}},
        },
    }


def function_patch(name: str) -> dict[str, Any]:
    """Parts of a function's properties this module owns (merged into the existing entry)."""
    function = FUNCTIONS[name]
    variables: dict[str, Any] = {"PUBLIC_BASE_URL": {"Ref": "PublicBaseUrl"}, "SECRETS_ID": secrets_id(function)}
    queues = [*function.send, *([function.consume] if function.consume else [])]
    for queue in sorted(set(queues) & set(QUEUE_ENV)):
        variables[QUEUE_ENV[queue]] = {"Ref": queue}
    if function.exports:
        variables["EXPORTS_BUCKET"] = {"Ref": "ExportsBucket"}
    return {
        "FunctionName": {"Fn::Sub": f"${{AWS::StackName}}-{name}"},
        "Environment": {"Variables": variables},
        "Tracing": "Active" if name == API_FUNCTION else {"Ref": "EventTracing"},
    }


def tracing_resources() -> dict[str, dict[str, Any]]:
    """The API's sampling rule: `API_TRACE_RATE` of requests, no reservoir."""
    return {
        "ApiSamplingRule": {
            "Type": "AWS::XRay::SamplingRule",
            "Properties": {
                "SamplingRule": {
                    "RuleName": {"Fn::Sub": "${AWS::StackName}-api"},
                    "Priority": 100,
                    "FixedRate": API_TRACE_RATE,
                    "ReservoirSize": 0,
                    "ServiceName": API_SERVICE,
                    "ServiceType": "*",
                    "Host": "*",
                    "HTTPMethod": "*",
                    "URLPath": "*",
                    "ResourceARN": "*",
                    "Version": 1,
                }
            },
        }
    }


EVENT_TRACING_PARAMETER = {
    "Type": "String",
    "Default": "PassThrough",
    "AllowedValues": ["PassThrough", "Active"],
    "Description": "X-Ray tracing of the stream, queue and scheduled functions (Active traces every invocation).",
}


def apply(template: dict[str, Any], scanned: Scanned | None = None) -> dict[str, Any]:
    """`template` with the generated parts replaced (other resources untouched, order kept)."""
    resources = template["Resources"]
    tables = {name for name, res in resources.items() if res.get("Type") == "AWS::DynamoDB::Table"}
    resources.update(generated(tables, scanned))
    for name in FUNCTIONS:
        props = resources.setdefault(name, {}).setdefault("Properties", {})
        props.update(function_patch(name))
    resources.update(api_resources())
    resources.update(tracing_resources())
    template.setdefault("Parameters", {})["EventTracing"] = EVENT_TRACING_PARAMETER
    api = resources.setdefault("RestAPI", {})
    api["DependsOn"] = ["ApiGatewayAccount"]
    api.setdefault("Properties", {})["AccessLogSetting"] = {
        "DestinationArn": {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]},
        "Format": ACCESS_LOG_FORMAT,
    }
    return template


def render(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if infra/merge-prod.json is stale")
    args = parser.parse_args(argv)
    current = MERGE.read_text("utf-8")
    wanted = render(apply(json.loads(current)))
    if args.check:
        if wanted != current:
            print("infra/merge-prod.json is stale: run `python -m infra.iam`", file=sys.stderr)
            return 1
        return 0
    MERGE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
