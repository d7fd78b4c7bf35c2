"""Bind throughput through the app's code path against raw DynamoDB Local writes, one run.

Both sides run on the same DynamoDB Local, with the same number of threads, one after the
other, each on fresh users:
- app: `referrals.scan()` as the API calls it (cached share and sharer ancestry, one
  conditional update of the user); the pipeline figure adds what the users stream then does
  for each binding (audit record with the share counters, validation of the new edge);
- raw: one conditional PutItem per binding of the very item a binding leaves (a bound user
  read back from the table), the bare minimum any binding needs; and, for the pipeline
  figure, every item a binding finally writes (user, audit record, share counters) as
  plain writes. The two sides run in interleaved halves.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TARGET = 0.5


@contextlib.contextmanager
def fresh_ddb_local() -> Iterator[str]:
    """A DynamoDB Local of the benchmark's own (in memory, a free port), with dummy AWS
    credentials in the environment; yields its endpoint and stops it afterwards."""
    from devtools.ddb_local import ensure_ddb_local, free_port, local_aws_env, start_ddb_local, stop

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    proc = start_ddb_local(
        port, None, Path(tempfile.mkdtemp()) / "ddb.log", jar_dir=ensure_ddb_local(root / ".local" / "ddb")
    )
    try:
        os.environ.update(local_aws_env(f"http://127.0.0.1:{port}"))
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def run(binds: int, threads: int) -> dict[str, Any]:
    with fresh_ddb_local() as endpoint:
        return _measure(endpoint, binds, threads)


def _runner(endpoint: str, prefix: str) -> Any:
    from app import app
    from devtools.runner import EventRunner

    return EventRunner(
        app,
        table_name_for=lambda logical: f"{prefix}-{logical}",
        endpoint_url=endpoint,
        state_dir=Path(tempfile.mkdtemp()),
    )


def _setup(endpoint: str) -> Any:
    os.environ.update(
        {
            "TABLE_PREFIX": f"bench{uuid.uuid4().hex[:6]}",
            "DYNAMODB_ENDPOINT": endpoint,
            "JWT_SECRET": "bench-secret-0123456789abcdef",
            "WECHAT_MODE": "sandbox",
            "DEFAULT_TENANT": "wxbench000000001",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    from chalicelib.clock import utcnow
    from chalicelib.entities import Tenant
    from chalicelib.settings import get_settings
    from chalicelib.store import get_store
    from devtools.tables import create_all_tables

    get_settings.cache_clear()
    get_store.cache_clear()
    create_all_tables()
    get_store().tenants.put(Tenant("wxbench000000001", "bench"), utcnow())
    return get_settings()


def _twin(client: Any, source: str) -> str:
    """Create `<source>-raw` with the same keys, indexes and stream as `source`."""
    table = client.describe_table(TableName=source)["Table"]
    spec: dict[str, Any] = {
        "TableName": f"{source}-raw",
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": table["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if table.get("GlobalSecondaryIndexes"):
        spec["GlobalSecondaryIndexes"] = [
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection")} for index in table["GlobalSecondaryIndexes"]
        ]
    if table.get("StreamSpecification"):
        spec["StreamSpecification"] = table["StreamSpecification"]
    client.create_table(**spec)
    client.get_waiter("table_exists").wait(TableName=spec["TableName"])
    return str(spec["TableName"])


def _timed(indexes: list[int], threads: int, work: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, indexes))
    return time.perf_counter() - start


def _measure(endpoint: str, binds: int, threads: int) -> dict[str, Any]:
    import boto3

    settings = _setup(endpoint)  # environment first: the app reads it when imported

    from chalicelib.entities import Principal, Role
    from chalicelib.services import logins, referrals, shares

    tenant = "wxbench000000001"
    sharers = [logins.login(f"dev-sharer{i}", tenant).user.id for i in range(20)]
    codes = [shares.create(Principal(tenant, uid, Role.USER), None, None).code for uid in sharers]
    users = [logins.login(f"dev-user{i}", tenant).user.id for i in range(binds + 1)]

    def app_bind(i: int) -> None:
        result = referrals.scan(Principal(tenant, users[i], Role.USER), codes[i % len(codes)])
        if result.status.value != "bound":
            raise RuntimeError(f"bench bind failed: {result}")

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    users_table, audit_table, shares_table = (f"{settings.table_prefix}-{t}" for t in ("users", "audit", "shares"))
    # The raw side writes into twins of the tables (same keys, indexes and stream) that no
    # handler consumes, so its items cost the same to write but add no work to the app's stream.
    raw_users, raw_audit, raw_shares = (_twin(client, t) for t in (users_table, audit_table, shares_table))
    run_id = uuid.uuid4().hex[:6]
    # The raw side writes the very item a binding leaves: a bound user read back from the table.
    app_bind(binds)
    template = client.get_item(TableName=users_table, Key={"pk": {"S": f"{tenant}#{users[binds]}"}})["Item"]

    def raw_item(i: int, suffix: str = "") -> dict[str, Any]:
        return {**template, "pk": {"S": f"{tenant}#raw{run_id}{suffix}{i}"}, "uid": {"S": f"raw{i}"}}

    def raw_put(i: int) -> None:
        client.put_item(TableName=raw_users, Item=raw_item(i), ConditionExpression="attribute_not_exists(pk)")

    def raw_everything(i: int) -> None:
        client.put_item(TableName=raw_users, Item=raw_item(i, "x"), ConditionExpression="attribute_not_exists(pk)")
        client.put_item(
            TableName=raw_audit,
            Item={"pk": {"S": f"{tenant}#user:raw{i}"}, "sk": {"S": f"2026#{run_id}{i}"}, "data": {"S": "{}"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        client.update_item(
            TableName=raw_shares,
            Key={"pk": {"S": f"{tenant}#{codes[i % len(codes)]}"}},
            UpdateExpression="ADD scans :one, binds :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    runner = _runner(endpoint, settings.table_prefix)
    runner.drain(timeout=120)  # logins and shares made above: not part of the measure
    # Interleaved halves, so that a slow spell of the shared machine hits both sides.
    halves = [list(range(0, binds // 2)), list(range(binds // 2, binds))]
    raw_s = app_s = 0.0
    for half in halves:
        raw_s += _timed(half, threads, raw_put)
        app_s += _timed(half, threads, app_bind)
    start = time.perf_counter()
    delivered = runner.drain(timeout=300)  # audit records, edge validation, share counters
    stream_s = time.perf_counter() - start
    everything_s = _timed(list(range(binds)), threads, raw_everything)
    ratio = raw_s / app_s
    return {
        "binds_per_side": binds,
        "threads": threads,
        "app_binds_per_s": round(binds / app_s, 1),
        "raw_conditional_puts_per_s": round(binds / raw_s, 1),
        "ratio_app_to_raw_put": round(ratio, 3),
        "target": f">= {TARGET} (app request path vs raw conditional put of the same item)",
        "meets_target": ratio >= TARGET,
        "stream_records_delivered": delivered,
        "pipeline_binds_per_s_incl_stream": round(binds / (app_s + stream_s), 1),
        "raw_all_items_per_s": round(binds / everything_s, 1),
        "ratio_pipeline_to_raw_all_items": round(everything_s / (app_s + stream_s), 3),
    }
