"""Fixtures that point the app at a fresh set of tables on the session's DynamoDB Local."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib import caches
from chalicelib.entities import Principal, Role
from devtools.runner import EventRunner
from tests.envutil import environ

TEST_TENANT = "wxtest000000000a"
OTHER_TENANT = "wxtest000000000b"
JWT_SECRET = "test-secret-0123456789-abcdefghij"
MERCHANT_KEY = "dGVzdC1tZXJjaGFudC1rZXktMzItYnl0ZXMtbG9uZyE="  # 32 bytes: "test-merchant-key-32-bytes-long!"
# Withdrawal rules generous enough for any test (the `rules` fixture sets them and restores them).
OPEN_RULES = {
    "min_fen": 100,
    "max_per_day_fen": 100_000_000,
    "count_per_day": 1000,
    "fee_bps": 0,
    "fee_fixed_fen": 0,
    "auto_approve_below_fen": 0,
    "real_name_from_fen": 200_000,
}


def reset_caches() -> None:
    """Forget every cached setting, store, client and lookup (after the environment changed)."""
    caches.clear_all()


def app_env(endpoint: str, prefix: str) -> dict[str, str]:
    """The environment the app needs for tables `<prefix>-*` on `endpoint`."""
    return {
        "TABLE_PREFIX": prefix,
        "DYNAMODB_ENDPOINT": endpoint,
        "JWT_SECRET": JWT_SECRET,
        "MERCHANT_KEY": MERCHANT_KEY,
        "WECHAT_MODE": "sandbox",
        "DEFAULT_TENANT": TEST_TENANT,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "FenxiaoTest",
        "POWERTOOLS_SERVICE_NAME": "fenxiao",
        "PUBLIC_BASE_URL": "http://127.0.0.1:9",
        "SANDBOX_REFUND_SECONDS": "0",
        "SANDBOX_KEYS_DIR": str(Path(tempfile.gettempdir()) / f"fenxiao-test-wechatpay-{prefix}"),
        "LOCAL_QUEUE_DIR": str(Path(tempfile.gettempdir()) / f"fenxiao-test-queues-{prefix}"),
        "LOCAL_EXPORTS_DIR": str(Path(tempfile.gettempdir()) / f"fenxiao-test-exports-{prefix}"),
    }


@dataclass(frozen=True)
class Stack:
    endpoint: str
    prefix: str
    runner: EventRunner
    tenant: str = TEST_TENANT

    def drain(self) -> int:
        """Deliver every pending stream record to the app's handlers (as Lambda would)."""
        return self.runner.drain(timeout=30.0)

    def stream_records(self, table: str = "orders") -> list[dict[str, Any]]:
        """Every record of a table's stream, as Lambda would deliver them (read without the runner)."""
        import boto3

        client = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name="us-east-1")
        streams = boto3.client("dynamodbstreams", endpoint_url=self.endpoint, region_name="us-east-1")
        arn = client.describe_table(TableName=f"{self.prefix}-{table}")["Table"]["LatestStreamArn"]
        records: list[dict[str, Any]] = []
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                for record in page["Records"]:
                    record["dynamodb"].pop("ApproximateCreationDateTime", None)
                    records.append(record)
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
        return records

    def principal(self, uid: str, role: Role = Role.USER) -> Principal:
        return Principal(tenant=self.tenant, subject=uid, role=role)


@pytest.fixture(scope="session")
def stack(ddb_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Tables with a unique prefix, two tenants and their admins, for the whole session."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with environ(app_env(ddb_endpoint, prefix)):
        yield from _stack(ddb_endpoint, prefix, tmp_path_factory)


def _stack(ddb_endpoint: str, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from chalicelib.auth import hash_password
    from chalicelib.clock import utcnow
    from chalicelib.entities import Admin, Tenant
    from chalicelib.store import get_store
    from devtools.tables import create_all_tables

    reset_caches()
    create_all_tables()
    store = get_store()
    for tenant_id in (TEST_TENANT, OTHER_TENANT):
        store.tenants.put(Tenant(tenant_id, f"Test {tenant_id}"), utcnow())
        for role in (Role.OWNER, Role.OPS, Role.FINANCE, Role.AUDITOR):
            store.admins.put(Admin(tenant_id, role.value, hash_password("pw-" + role.value), role), utcnow())
    from app import app
    from chalicelib.wechat import outbox

    outbox.set_transport(chalice_transport(app))
    runner = EventRunner(
        app,
        table_name_for=lambda logical: f"{prefix}-{logical}",
        endpoint_url=ddb_endpoint,
        state_dir=tmp_path_factory.mktemp("runner"),
        max_retries=6,  # Lambda delivers a record 1 + MaximumRetryAttempts (5) times; the app parks at 5
        spool_dir=Path(tempfile.gettempdir()) / f"fenxiao-test-queues-{prefix}",
        notifications=outbox.deliver_due,
    )
    try:
        yield Stack(endpoint=ddb_endpoint, prefix=prefix, runner=runner)
    finally:
        outbox.set_transport(None)
        reset_caches()


def chalice_transport(app: Any) -> Callable[[str, Mapping[str, str], bytes], int]:
    """Deliver the WeChat twins' notifications to the URL they were given, through the app's own
    router (the Chalice test client), for tests that run no HTTP server: the path is the real one."""
    from urllib.parse import urlsplit

    from chalice.test import Client

    client = Client(app)

    from chalicelib.settings import get_settings
    from chalicelib.wechat.outbox import http_transport

    def post(url: str, headers: Mapping[str, str], body: bytes) -> int:
        parts = urlsplit(url)
        assert not parts.query, f"WeChat refuses notify URLs with parameters: {url}"
        if not url.startswith(get_settings().public_base_url):
            return http_transport(url, headers, body)  # a live server's URL (e2e): real HTTP
        response = client.http.post(parts.path, headers={**headers, "Content-Type": "application/json"}, body=body)
        return int(response.status_code)

    return post


def unique(name: str) -> str:
    """A user name no other test uses (tests share the tables)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
