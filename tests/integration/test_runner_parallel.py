"""The local event runner's ParallelizationFactor against DynamoDB Local, with a toy Chalice app.

Lambda with a factor N runs up to N batches of one shard at once: records of one item (the same
hash key) stay in order in one batch lane, different items spread over the lanes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, DynamoDBEvent

from devtools.runner import EventRunner, app_infra_template, parallelization_factors, partition_lane
from devtools.runner.delivery import _Item
from devtools.runner.streams import _Progress

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/local"


@dataclass
class Call:
    """One invocation of a handler: when it ran and which records it carried."""

    started: float
    ended: float
    keys: list[str]


@dataclass
class Toy:
    """A toy app whose stream handlers record their invocations."""

    app: Chalice
    calls: list[Call] = field(default_factory=list)
    versions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sleep: float = 0.0

    def enter(self) -> float:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return time.monotonic()

    def leave(self, started: float, keys: list[str]) -> None:
        with self.lock:
            self.in_flight -= 1
            self.calls.append(Call(started, time.monotonic(), keys))


def _key_and_version(record: Any) -> tuple[str, int]:
    image = record.new_image or {}
    return str(record.keys["pk"]["S"]), int(image.get("n", {}).get("N", "0"))


@pytest.fixture
def toy() -> Toy:
    toy = Toy(app=Chalice(app_name="lanes-toy"))

    @toy.app.on_dynamodb_record(stream_arn=STREAM_ARN.format("items"), batch_size=3)
    def on_item(event: DynamoDBEvent) -> dict[str, Any]:
        started = toy.enter()
        failures: list[dict[str, str]] = []
        keys = []
        for record in event:
            key, version = _key_and_version(record)
            keys.append(key)
            toy.attempts[key, version] += 1
            image = record.new_image or {}
            flaky = int(image.get("flaky", {}).get("N", "0"))
            if failures or "poison" in image or toy.attempts[key, version] <= flaky:
                failures.append({"itemIdentifier": record.sequence_number})
            else:
                toy.versions[key].append(version)
        time.sleep(toy.sleep)
        toy.leave(started, keys)
        return {"batchItemFailures": failures}

    return toy


@pytest.fixture
def ddb(ddb_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=ddb_endpoint, region_name="us-east-1")


@pytest.fixture
def table(ddb: Any) -> Iterator[tuple[str, str]]:
    """A fresh ``<prefix>-items`` table with a stream; yields (prefix, table name)."""
    prefix = f"p{uuid.uuid4().hex[:10]}"
    name = f"{prefix}-items"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    ddb.get_waiter("table_exists").wait(TableName=name)
    yield prefix, name
    ddb.delete_table(TableName=name)


@pytest.fixture
def make_runner(toy: Toy, table: tuple[str, str], ddb_endpoint: str, tmp_path: Path) -> Callable[..., EventRunner]:
    def build(**kwargs: Any) -> EventRunner:
        return EventRunner(
            toy.app,
            table_name_for=lambda logical: f"{table[0]}-{logical}",
            endpoint_url=ddb_endpoint,
            state_dir=tmp_path / "state",
            **kwargs,
        )

    return build


def _put(ddb: Any, table: str, key: str, version: int, **attrs: dict[str, Any]) -> None:
    ddb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": str(version)}, **attrs})


def _keys_one_per_lane(lanes: int, per_lane: int = 1) -> list[str]:
    """Keys whose partition key hashes cover every lane ``per_lane`` times."""
    found: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(found[lane]) < per_lane for lane in range(lanes)):
        key = f"k{i}"
        lane = partition_lane({"pk": {"S": key}}, "pk", lanes)
        if len(found[lane]) < per_lane:
            found[lane].append(key)
        i += 1
    return [key for lane in range(lanes) for key in found[lane]]


def _overlap(a: Call, b: Call) -> bool:
    return a.started < b.ended and b.started < a.ended


def test_records_of_one_item_stay_in_order_and_never_run_in_two_batches_at_once(
    toy: Toy, ddb: Any, table: tuple[str, str], make_runner: Callable[..., EventRunner]
) -> None:
    # Given 12 items with 4 versions each, written interleaved, and a handler that takes a while
    keys = _keys_one_per_lane(4, per_lane=3)
    for version in range(4):
        for key in keys:
            _put(ddb, table[1], key, version)
    toy.sleep = 0.02

    # When four lanes deliver them in batches of 3
    assert make_runner(parallelization=4).drain(timeout=60) == 48

    # Then every item saw its versions in order, exactly once
    assert {key: toy.versions[key] for key in keys} == {key: [0, 1, 2, 3] for key in keys}
    # and two batches that ran at the same time never shared an item
    for i, a in enumerate(toy.calls):
        for b in toy.calls[i + 1 :]:
            if _overlap(a, b):
                assert not set(a.keys) & set(b.keys)
    assert toy.most_in_flight == 4
    assert all(len(call.keys) <= 3 for call in toy.calls)


def test_different_items_are_processed_concurrently(
    toy: Toy, ddb: Any, table: tuple[str, str], make_runner: Callable[..., EventRunner]
) -> None:
    # Given one record in each of four lanes, and a handler that sleeps
    for key in _keys_one_per_lane(4):
        _put(ddb, table[1], key, 0)
    toy.sleep = 0.5

    # When the runner delivers them with a factor of 4
    started = time.monotonic()
    assert make_runner(parallelization=4).drain(timeout=60) == 4
    elapsed = time.monotonic() - started

    # Then all four batches were in flight at once
    assert toy.most_in_flight == 4
    assert len(toy.calls) == 4
    assert all(_overlap(toy.calls[0], call) for call in toy.calls[1:])
    assert elapsed < 4 * toy.sleep


def test_a_factor_of_one_delivers_one_batch_at_a_time(
    toy: Toy, ddb: Any, table: tuple[str, str], make_runner: Callable[..., EventRunner]
) -> None:
    keys = _keys_one_per_lane(4)
    for key in keys:
        _put(ddb, table[1], key, 0)
    toy.sleep = 0.05

    assert make_runner().drain(timeout=60) == 4

    assert toy.most_in_flight == 1
    assert [call.keys for call in toy.calls] == [keys[:3], keys[3:]]  # shard order, batches of 3


def test_failures_are_retried_in_their_lane_parked_and_checkpointed(
    toy: Toy,
    ddb: Any,
    table: tuple[str, str],
    make_runner: Callable[..., EventRunner],
    tmp_path: Path,
) -> None:
    # Given, over four lanes, an item failing twice before it succeeds, a poison item, and others
    keys = _keys_one_per_lane(4, per_lane=2)
    flaky, poison = keys[0], keys[2]
    for version in range(2):
        for key in keys:
            extra: dict[str, Any] = {}
            if key == flaky and version == 0:
                extra = {"flaky": {"N": "2"}}
            if key == poison and version == 0:
                extra = {"poison": {"BOOL": True}}
            _put(ddb, table[1], key, version, **extra)
    toy.sleep = 0.01
    runner = make_runner(parallelization=4)

    # When the runner drains the stream
    assert runner.drain(timeout=60) == 16

    # Then the flaky item succeeded on its third delivery, still before its next version
    assert toy.versions[flaky] == [0, 1]
    assert toy.attempts[flaky, 0] == 3
    # the poison record was parked after three deliveries and its item's next version went on
    assert toy.attempts[poison, 0] == 3
    assert toy.versions[poison] == [1]
    (parked,) = [json.loads(line) for line in (tmp_path / "state" / "dlq" / "on_item.jsonl").read_text().splitlines()]
    assert parked["record"]["dynamodb"]["Keys"] == {"pk": {"S": poison}}
    assert parked["attempts"] == 3
    # every other item was processed once, in order
    for key in keys:
        if key not in (flaky, poison):
            assert toy.versions[key] == [0, 1]
    # and the checkpoint is past everything: a new runner finds nothing to do
    assert make_runner(parallelization=4).drain(timeout=60) == 0
    _put(ddb, table[1], keys[1], 2)
    assert make_runner(parallelization=4).drain(timeout=60) == 1
    assert toy.versions[keys[1]] == [0, 1, 2]


def test_a_raising_handler_is_bisected_inside_its_lane(
    toy: Toy, ddb: Any, table: tuple[str, str], make_runner: Callable[..., EventRunner], tmp_path: Path
) -> None:
    calls = []

    @toy.app.on_dynamodb_record(stream_arn=STREAM_ARN.format("items"), batch_size=3)
    def raising(event: DynamoDBEvent) -> None:
        records = list(event)
        calls.append([_key_and_version(r) for r in records])
        if any("poison" in (r.new_image or {}) for r in records):
            raise ValueError("poison")

    keys = _keys_one_per_lane(2, per_lane=3)
    for key in keys:
        _put(ddb, table[1], key, 0, **({"poison": {"BOOL": True}} if key == keys[1] else {}))

    make_runner(parallelization={"raising": 2, "on_item": 1}, only=["raising"]).drain(timeout=60)

    (parked,) = [json.loads(line) for line in (tmp_path / "state" / "dlq" / "raising.jsonl").read_text().splitlines()]
    assert parked["record"]["dynamodb"]["Keys"] == {"pk": {"S": keys[1]}}
    delivered_fine = {key for call in calls if all(k != keys[1] for k, _ in call) for key, _ in call}
    assert delivered_fine == set(keys) - {keys[1]}
    # the other lane's batch went through once: bisection stayed inside the poison's lane
    assert sum(1 for call in calls if set(k for k, _ in call) == set(keys[3:])) == 1


def test_progress_saves_only_the_prefix_every_lane_finished() -> None:
    items = [_Item(str(n), {}) for n in range(1, 7)]
    saved: list[str] = []
    progress = _Progress(items, saved.append)

    progress.commit([items[1], items[3]])  # lanes finished 2 and 4 first: nothing before them
    progress.commit([items[0]])  # 1 done: prefix 1-2
    progress.commit([items[2], items[5]])  # 3 done: prefix 1-4 (6 waits for 5)
    progress.commit([])
    progress.commit([items[4]])

    assert saved == ["2", "4", "6"]


def test_the_factor_comes_from_the_merge_template_unless_given(
    toy: Toy, make_runner: Callable[..., EventRunner], tmp_path: Path
) -> None:
    template = tmp_path / "merge.json"
    source = {"Properties": {"ParallelizationFactor": 3, "BatchSize": 30}}
    template.write_text(json.dumps({"Resources": {"OnItem": {"Properties": {"Events": {"OnItemSource": source}}}}}))

    def factor(runner: EventRunner) -> int:
        (entry,) = runner.describe()
        return int(entry["parallelization"])

    assert factor(make_runner()) == 1  # the toy app's module has no infra/ beside it
    assert factor(make_runner(infra_template=template)) == 3
    assert factor(make_runner(infra_template=template, parallelization=2)) == 2
    assert factor(make_runner(infra_template=template, parallelization={"other": 5})) == 3
    assert factor(make_runner(parallelization={"on_item": 4})) == 4
    with pytest.raises(ValueError, match="at least 1"):
        make_runner(parallelization=0)


def test_an_app_directory_with_infra_sets_its_handlers_factors(tmp_path: Path) -> None:
    app_dir = tmp_path / "lanes_app"
    (app_dir / "infra").mkdir(parents=True)
    (app_dir / "lanes_app_module.py").write_text(
        textwrap.dedent(
            """
            from chalice import Chalice

            app = Chalice(app_name="lanes-app")


            @app.on_dynamodb_record(stream_arn="arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/x")
            def on_order_change(event):
                return None
            """
        )
    )
    source = {"Properties": {"ParallelizationFactor": 4}}
    merge = {"Resources": {"OnOrderChange": {"Properties": {"Events": {"OnOrderChangeDynamodbEventSource": source}}}}}
    (app_dir / "infra" / "merge-prod.json").write_text(json.dumps(merge))
    spec = importlib.util.spec_from_file_location("lanes_app_module", app_dir / "lanes_app_module.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lanes_app_module"] = module
    try:
        spec.loader.exec_module(module)
        template = app_infra_template(module.app)
    finally:
        del sys.modules["lanes_app_module"]

    assert template == (app_dir / "infra" / "merge-prod.json").resolve()
    assert parallelization_factors(template) == {"OnOrderChange": 4}


def test_the_project_template_sets_the_commission_stream_factor() -> None:
    factors = parallelization_factors(PROJECT_ROOT / "infra" / "merge-prod.json")

    assert factors.get("OnOrderChange", 1) > 1
