"""Bind throughput through the app's code path against raw DynamoDB Local writes, one run.

Both sides run on the same DynamoDB Local, with the same number of threads, one after the
other, each on fresh users:
- app: `referrals.scan()` as the API calls it (cached share and sharer ancestry, one
  conditional update of the user); the pipeline figure adds what the users stream then does
  for each binding (audit record with the share counters, validation of the new edge);
- raw: one conditional PutItem per binding (the user record, `attribute_not_exists`), the
  bare minimum any binding needs; and, for reference, the same items the app writes as
  separate plain writes (user, audit record, share counter).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TARGET = 0.5


def _rate(count: int, threads: int, work: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(count)))
    return count / (time.perf_counter() - start)


def run(binds: int, threads: int) -> dict[str, Any]:
    from devtools.ddb_local import ensure_ddb_local, free_port, local_aws_env, start_ddb_local, stop

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    proc = start_ddb_local(
        port, None, Path(tempfile.mkdtemp()) / "ddb.log", jar_dir=ensure_ddb_local(root / ".local" / "ddb")
    )
    try:
        os.environ.update(local_aws_env(f"http://127.0.0.1:{port}"))
        return _measure(f"http://127.0.0.1:{port}", binds, threads)
    finally:
        stop(proc)


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


def _measure(endpoint: str, binds: int, threads: int) -> dict[str, Any]:
    import boto3

    settings = _setup(endpoint)  # environment first: the app reads it when imported

    from chalicelib.entities import Principal, Role
    from chalicelib.services import accounts, referrals, shares

    tenant = "wxbench000000001"
    sharers = [accounts.login(f"dev-sharer{i}", tenant).user.id for i in range(20)]
    codes = [shares.create(Principal(tenant, uid, Role.USER), None, None).code for uid in sharers]
    users = [accounts.login(f"dev-user{i}", tenant).user.id for i in range(binds)]

    def app_bind(i: int) -> None:
        result = referrals.scan(Principal(tenant, users[i], Role.USER), codes[i % len(codes)])
        if result.status.value != "bound":
            raise RuntimeError(f"bench bind failed: {result}")

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    users_table, audit_table, shares_table = (f"{settings.table_prefix}-{t}" for t in ("users", "audit", "shares"))
    run_id = uuid.uuid4().hex[:6]

    def user_item(i: int) -> dict[str, Any]:
        return {
            "pk": {"S": f"{tenant}#raw{run_id}{i}"},
            "uid": {"S": f"raw{i}"},
            "upline": {"L": [{"S": sharers[i % len(sharers)]}]},
            "l1k": {"S": f"{tenant}#{sharers[i % len(sharers)]}"},
            "bound_at": {"S": "2026-11-24T00:00:00.000000Z"},
        }

    def raw_put(i: int) -> None:
        client.put_item(TableName=users_table, Item=user_item(i), ConditionExpression="attribute_not_exists(pk)")

    def raw_same_items(i: int) -> None:
        item = user_item(i)
        item["pk"] = {"S": item["pk"]["S"] + "x"}
        client.put_item(TableName=users_table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        client.put_item(
            TableName=audit_table,
            Item={"pk": {"S": f"{tenant}#user:raw{i}"}, "sk": {"S": f"2026#{run_id}{i}"}, "data": {"S": "{}"}},
        )
        client.update_item(
            TableName=shares_table,
            Key={"pk": {"S": f"{tenant}#{codes[i % len(codes)]}"}},
            UpdateExpression="ADD scans :one, binds :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    runner = _runner(endpoint, settings.table_prefix)
    runner.drain(timeout=120)  # logins and shares made above: not part of the measure
    raw_rate = _rate(binds, threads, raw_put)
    start = time.perf_counter()
    app_rate = _rate(binds, threads, app_bind)
    delivered = runner.drain(timeout=300)  # audit records, edge validation, share counters
    pipeline_rate = binds / (time.perf_counter() - start)
    same_items_rate = _rate(binds, threads, raw_same_items)
    ratio = app_rate / raw_rate
    return {
        "binds_per_side": binds,
        "threads": threads,
        "app_binds_per_s": round(app_rate, 1),
        "raw_conditional_puts_per_s": round(raw_rate, 1),
        "raw_same_items_as_plain_writes_per_s": round(same_items_rate, 1),
        "pipeline_binds_per_s_incl_stream": round(pipeline_rate, 1),
        "stream_records_delivered": delivered,
        "ratio_app_to_raw_put": round(ratio, 3),
        "ratio_pipeline_to_raw_put": round(pipeline_rate / raw_rate, 3),
        "ratio_app_to_raw_same_items": round(app_rate / same_items_rate, 3),
        "target": f">= {TARGET} (app vs raw conditional put)",
        "meets_target": ratio >= TARGET,
    }
