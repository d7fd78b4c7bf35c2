"""Integration tests of the local event runner against DynamoDB Local, with a toy Chalice app."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, CloudWatchEvent, DynamoDBEvent, Rate, SQSEvent

from devtools.runner import EventRunner, schedule_interval_seconds
from tests import events

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/local"
RECORD_FIELDS = events.STREAM_RECORD_FIELDS  # what Lambda puts in a stream event (tests/events.py)
SQS_FIELDS = events.SQS_RECORD_FIELDS


@dataclass
class Toy:
    """A toy Chalice app plus what its handlers saw."""

    app: Chalice
    events: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    processed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    receive_counts: list[str] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)


def _key(record: Any) -> str:
    """Return the ``pk`` string of a DynamoDB stream record."""
    return str(record.keys["pk"]["S"])


def _is_poison(record: Any) -> bool:
    """Return True if the record's new image carries a ``poison`` flag."""
    return "poison" in (record.new_image or {})


def _add_stream_handlers(toy: Toy) -> None:
    """Register the stream handlers: a recorder, a batchItemFailures one and a raising one."""
    app = toy.app

    @app.on_dynamodb_record(stream_arn=STREAM_ARN.format("events"), batch_size=10)
    def record_events(event: DynamoDBEvent) -> None:
        toy.events.append(event.to_dict())
        toy.contexts.append(event.context)

    @app.on_dynamodb_record(stream_arn=STREAM_ARN.format("partial"), batch_size=10)
    def partial_failures(event: DynamoDBEvent) -> dict[str, Any]:
        failures: list[dict[str, str]] = []
        for record in event:
            toy.attempts[_key(record)] += 1
            if failures or _is_poison(record):
                failures.append({"itemIdentifier": record.sequence_number})
            else:
                toy.processed["partial"].append(_key(record))
        return {"batchItemFailures": failures}

    @app.on_dynamodb_record(stream_arn=STREAM_ARN.format("boom"), batch_size=10)
    def raising(event: DynamoDBEvent) -> None:
        records = list(event)
        if any(_is_poison(record) for record in records):
            raise ValueError("poison record in batch")
        toy.processed["boom"].extend(_key(record) for record in records)


def _add_other_handlers(toy: Toy) -> None:
    """Register a schedule and an SQS handler."""
    app = toy.app

    @app.schedule(Rate(5, unit=Rate.MINUTES))
    def tick(event: CloudWatchEvent) -> dict[str, int]:
        toy.ticks.append(event.to_dict())
        return {"ticked": len(toy.ticks)}

    @app.on_sqs_message(queue="payouts", batch_size=5)
    def pay(event: SQSEvent) -> dict[str, Any]:
        failures = []
        for record in event:
            raw = record.to_dict()
            toy.receive_counts.append(f"{record.body}:{raw['attributes']['ApproximateReceiveCount']}")
            if record.body == "bad":
                failures.append({"itemIdentifier": raw["messageId"]})
            else:
                toy.processed["sqs"].append(record.body)
        return {"batchItemFailures": failures}


@pytest.fixture
def toy() -> Toy:
    """A fresh toy app per test."""
    toy = Toy(app=Chalice(app_name="runner-toy"))
    _add_stream_handlers(toy)
    _add_other_handlers(toy)
    return toy


@pytest.fixture
def ddb(ddb_endpoint: str) -> Any:
    """A low-level DynamoDB client for the test instance."""
    return boto3.client("dynamodb", endpoint_url=ddb_endpoint, region_name="us-east-1")


@pytest.fixture
def prefix() -> str:
    """A table prefix unique to the test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_table(ddb: Any, prefix: str) -> Callable[[str], str]:
    """Return a function creating ``<prefix>-<logical>`` with a NEW_AND_OLD_IMAGES stream."""

    def create(logical: str) -> str:
        name = f"{prefix}-{logical}"
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        ddb.get_waiter("table_exists").wait(TableName=name)
        return name

    return create


@pytest.fixture
def make_runner(toy: Toy, prefix: str, ddb_endpoint: str, tmp_path: Path) -> Callable[..., EventRunner]:
    """Return a factory of runners for the toy app sharing one state dir."""

    def build(**kwargs: Any) -> EventRunner:
        return EventRunner(
            toy.app,
            table_name_for=lambda logical: f"{prefix}-{logical}",
            endpoint_url=ddb_endpoint,
            state_dir=tmp_path / "state",
            **kwargs,
        )

    return build


def _put(ddb: Any, table: str, key: str, **attrs: dict[str, Any]) -> None:
    """Put an item with ``pk=key`` and extra raw attributes."""
    ddb.put_item(TableName=table, Item={"pk": {"S": key}, **attrs})


def _dlq(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """Return the dead-letter entries of handler ``name``."""
    path = tmp_path / "state" / "dlq" / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _records(toy: Toy) -> list[dict[str, Any]]:
    """Return every stream record the recorder saw, in delivery order."""
    return [record for event in toy.events for record in event["Records"]]


def test_describe_lists_every_handler(make_runner: Callable[..., EventRunner], prefix: str) -> None:
    described = {entry["name"]: entry for entry in make_runner().describe()}

    assert set(described) == {"record_events", "partial_failures", "raising", "tick", "pay"}
    assert described["record_events"]["kind"] == "dynamodb"
    assert described["record_events"]["local_table"] == f"{prefix}-events"
    assert described["record_events"]["batch_size"] == 10
    assert described["tick"] == {
        "name": "tick",
        "kind": "schedule",
        "handler": "app.tick",
        "expression": "rate(5 minutes)",
        "interval_seconds": 300.0,
    }
    assert described["pay"]["queue"] == "payouts"


def test_records_delivered_in_order_in_lambda_shape(
    toy: Toy, ddb: Any, make_table: Callable[[str], str], make_runner: Callable[..., EventRunner]
) -> None:
    table = make_table("events")
    for i in range(5):
        _put(ddb, table, f"k{i}", n={"N": str(i)}, blob={"B": b"\x00\xff"})
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "k1"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "10"}},
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "k2"}})
    stream_arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]

    assert make_runner(batch_size=3).drain() == 7

    records = _records(toy)
    assert [len(event["Records"]) for event in toy.events] == [3, 3, 1]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "k0"),
        ("INSERT", "k1"),
        ("INSERT", "k2"),
        ("INSERT", "k3"),
        ("INSERT", "k4"),
        ("MODIFY", "k1"),
        ("REMOVE", "k2"),
    ]
    sequence_numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence_numbers == sorted(set(sequence_numbers))
    for record in records:
        assert set(record) == RECORD_FIELDS
        assert record["eventVersion"] == "1.1"
        assert record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == "us-east-1"
        assert record["eventSourceARN"] == stream_arn
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert isinstance(record["dynamodb"]["SizeBytes"], int)
        created = record["dynamodb"]["ApproximateCreationDateTime"]
        assert isinstance(created, int | float)
        assert abs(created - time.time()) < 600
    insert, modify, remove = records[0], records[5], records[6]
    assert insert["dynamodb"]["NewImage"] == {
        "pk": {"S": "k0"},
        "n": {"N": "0"},
        "blob": {"B": base64.b64encode(b"\x00\xff").decode()},
    }
    assert "OldImage" not in insert["dynamodb"]
    assert modify["dynamodb"]["OldImage"]["n"] == {"N": "1"}
    assert modify["dynamodb"]["NewImage"]["n"] == {"N": "10"}
    assert "NewImage" not in remove["dynamodb"]
    assert remove["dynamodb"]["OldImage"]["pk"] == {"S": "k2"}
    json.dumps(toy.events)  # exactly what Lambda would send: plain JSON


def test_handlers_get_a_lambda_context(
    toy: Toy, ddb: Any, make_table: Callable[[str], str], make_runner: Callable[..., EventRunner]
) -> None:
    table = make_table("events")
    _put(ddb, table, "a")

    make_runner().drain()

    (context,) = toy.contexts
    assert context.function_name == "runner-toy-local-record_events"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn.endswith(":function:runner-toy-local-record_events")
    assert context.memory_limit_in_mb > 0
    assert context.aws_request_id
    assert context.log_group_name == "/aws/lambda/runner-toy-local-record_events"
    assert context.log_stream_name
    assert 0 < context.get_remaining_time_in_millis() <= 60_000


def test_batch_item_failures_redelivered_then_parked(
    toy: Toy,
    ddb: Any,
    make_table: Callable[[str], str],
    make_runner: Callable[..., EventRunner],
    tmp_path: Path,
) -> None:
    table = make_table("partial")
    for key in ("a", "b", "c", "d"):
        _put(ddb, table, key, **({"poison": {"BOOL": True}} if key == "b" else {}))
    runner = make_runner()

    runner.drain()

    assert toy.processed["partial"] == ["a", "c", "d"]
    assert toy.attempts["a"] == 1
    assert toy.attempts["b"] == 3
    (parked,) = _dlq(tmp_path, "partial_failures")
    assert parked["record"]["dynamodb"]["Keys"] == {"pk": {"S": "b"}}
    assert parked["id"] == parked["record"]["dynamodb"]["SequenceNumber"]
    assert parked["attempts"] == 3
    assert "batchItemFailures" in parked["error"]

    _put(ddb, table, "e")
    runner.drain()

    assert toy.processed["partial"] == ["a", "c", "d", "e"]
    assert toy.attempts["b"] == 3
    assert len(_dlq(tmp_path, "partial_failures")) == 1


def test_raising_handler_is_bisected_and_the_poison_parked(
    toy: Toy,
    ddb: Any,
    make_table: Callable[[str], str],
    make_runner: Callable[..., EventRunner],
    tmp_path: Path,
) -> None:
    table = make_table("boom")
    for i in range(6):
        _put(ddb, table, f"i{i}", **({"poison": {"BOOL": True}} if i == 3 else {}))
    runner = make_runner()

    runner.drain()

    assert toy.processed["boom"] == ["i0", "i1", "i2", "i4", "i5"]
    (parked,) = _dlq(tmp_path, "raising")
    assert parked["record"]["dynamodb"]["Keys"] == {"pk": {"S": "i3"}}
    assert "ValueError: poison record in batch" in parked["error"]
    assert parked["attempts"] >= 3

    _put(ddb, table, "i6")
    runner.drain()

    assert toy.processed["boom"][-1] == "i6"
    assert len(_dlq(tmp_path, "raising")) == 1


def test_checkpoints_survive_a_new_runner(
    toy: Toy,
    ddb: Any,
    make_table: Callable[[str], str],
    make_runner: Callable[..., EventRunner],
    tmp_path: Path,
) -> None:
    table = make_table("events")
    for key in ("a", "b", "c"):
        _put(ddb, table, key)
    assert make_runner().drain() == 3

    for key in ("d", "e"):
        _put(ddb, table, key)
    assert make_runner().drain() == 2
    assert make_runner().drain() == 0

    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in _records(toy)] == ["a", "b", "c", "d", "e"]
    checkpoints = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert "record_events" in checkpoints["streams"]


def test_missing_tables_are_skipped(toy: Toy, make_runner: Callable[..., EventRunner]) -> None:
    assert make_runner().poll_once() == 0
    assert toy.events == []


def test_fire_schedule_sends_a_scheduled_event(toy: Toy, make_runner: Callable[..., EventRunner]) -> None:
    assert make_runner().fire_schedule("tick") == {"ticked": 1}

    (event,) = toy.ticks
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["version"] == "0"
    assert event["account"] == "000000000000"
    assert event["region"] == "us-east-1"
    assert event["detail"] == {}
    assert event["id"]
    assert event["time"].endswith("Z")
    assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/runner-toy-local-tick"]


def test_run_forever_fires_schedules_and_stops(toy: Toy, make_runner: Callable[..., EventRunner]) -> None:
    runner = make_runner(schedule_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop, 0.05), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(toy.ticks) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)

    assert len(toy.ticks) >= 2
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60.0),
        ("rate(5 minutes)", 300.0),
        ("rate(2 hours)", 7200.0),
        ("rate(1 day)", 86400.0),
        ("cron(0 18 ? * MON-FRI *)", 3600.0),
        (Rate(3, unit=Rate.HOURS), 10800.0),
    ],
)
def test_schedule_intervals(expression: Any, seconds: float) -> None:
    assert schedule_interval_seconds(expression) == seconds


def test_sqs_messages_delivered_and_failures_parked(
    toy: Toy, make_runner: Callable[..., EventRunner], tmp_path: Path
) -> None:
    runner = make_runner()
    runner.send_message("payouts", "m1")
    bad_id = runner.send_message("payouts", "bad")
    runner.send_message("payouts", "m2")

    assert runner.drain() == 3

    assert toy.processed["sqs"] == ["m1", "m2"]
    assert [count for count in toy.receive_counts if count.startswith("bad")] == ["bad:1", "bad:2", "bad:3"]
    (parked,) = _dlq(tmp_path, "pay")
    assert parked["id"] == bad_id
    assert set(parked["record"]) == SQS_FIELDS
    assert parked["record"]["body"] == "bad"
    assert parked["record"]["eventSource"] == "aws:sqs"
    assert parked["record"]["eventSourceARN"] == "arn:aws:sqs:us-east-1:000000000000:payouts"

    runner.send_message("payouts", "m3")
    assert runner.poll_once() == 1
    assert toy.processed["sqs"] == ["m1", "m2", "m3"]


def test_spooled_messages_from_other_processes_are_delivered_once_in_order(
    toy: Toy, make_runner: Callable[..., EventRunner], tmp_path: Path
) -> None:
    from chalicelib.store.queue import spool

    spool_dir = tmp_path / "spool"
    first, second = make_runner(spool_dir=spool_dir), make_runner(spool_dir=spool_dir)
    for batch in range(5):
        spool(spool_dir, "payouts", [{"n": batch * 10 + i} for i in range(10)])
    (spool_dir / "payouts" / ".half-written.tmp").write_text("[{")  # a file being written is never read

    threads = [threading.Thread(target=r.drain) for r in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    seen = sorted(json.loads(body)["n"] for body in toy.processed["sqs"])
    assert seen == list(range(50))  # every message once, though two runners raced for the files
    assert [p.name for p in (spool_dir / "payouts").iterdir()] == [".half-written.tmp"]


CLI_APP = """
import json, os
from chalice import Chalice

app = Chalice(app_name="cli-toy")


@app.on_dynamodb_record(stream_arn="arn:aws:dynamodb:us-east-1:000000000000:table/things/stream/local")
def on_thing(event):
    with open(os.environ["SEEN_FILE"], "a") as handle:
        for record in event:
            handle.write(record.keys["pk"]["S"] + "\\n")
"""


@pytest.fixture
def cli_env(ddb_endpoint: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the runner CLI as a subprocess."""
    env = {
        **os.environ,
        "TABLE_PREFIX": prefix,
        "DYNAMODB_ENDPOINT": ddb_endpoint,
        "SEEN_FILE": str(tmp_path / "seen.txt"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return env


def test_cli_drains_the_app_in_a_directory(
    ddb: Any, make_table: Callable[[str], str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    app_dir = tmp_path / "toyapp"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(textwrap.dedent(CLI_APP))
    table = make_table("things")
    _put(ddb, table, "x")
    _put(ddb, table, "y")
    cmd = [
        sys.executable,
        "-m",
        "devtools.runner",
        "--app-dir",
        str(app_dir),
        "--state-dir",
        str(tmp_path / "s"),
    ]

    first = subprocess.run([*cmd, "--drain"], env=cli_env, capture_output=True, text=True, check=False)
    again = subprocess.run([*cmd, "--drain"], env=cli_env, capture_output=True, text=True, check=False)

    assert first.returncode == 0, first.stderr
    assert "delivered 2 record(s)" in first.stdout
    assert "delivered 0 record(s)" in again.stdout
    assert (tmp_path / "seen.txt").read_text().split() == ["x", "y"]
