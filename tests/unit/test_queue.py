"""The payout queue sender: SQS batches (stubbed botocore) and the local spool the runner drains."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from chalicelib.settings import get_settings
from chalicelib.store import queue
from tests.envutil import environ

pytestmark = pytest.mark.unit

URL = "https://sqs.ap-east-1.amazonaws.com/123456789012/fenxiao-prod-payouts"
BASE = {
    "TABLE_PREFIX": "unit",
    "JWT_SECRET": "unit-secret-0123456789",
    "WECHAT_MODE": "sandbox",
    "AWS_DEFAULT_REGION": "ap-east-1",
}


@pytest.fixture
def settings_env() -> Iterator[Any]:
    def use(**extra: str) -> None:
        get_settings.cache_clear()
        stack.enter_context(environ({**BASE, "PAYOUT_QUEUE_URL": "", "LOCAL_QUEUE_DIR": "", **extra}))

    from contextlib import ExitStack

    with ExitStack() as stack:
        yield use
    get_settings.cache_clear()


def bodies(n: int) -> list[dict[str, Any]]:
    return [{"tenant": "wxa", "withdrawal": f"W{i:08d}", "run": "R1"} for i in range(n)]


def test_the_local_spool_writes_one_file_per_ten_messages_in_order(settings_env: Any, tmp_path: Path) -> None:
    settings_env(LOCAL_QUEUE_DIR=str(tmp_path))
    assert queue.send_batch("payouts", bodies(23)) == 23
    files = sorted((tmp_path / "payouts").glob("*.json"))
    assert [len(json.loads(f.read_text())) for f in files] == [10, 10, 3]
    sent = [m["withdrawal"] for f in files for m in json.loads(f.read_text())]
    assert sent == [b["withdrawal"] for b in bodies(23)]
    assert not list((tmp_path / "payouts").glob(".*"))  # no temporary file left behind


def test_sqs_batches_resend_what_sqs_reports_failed(settings_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    settings_env(PAYOUT_QUEUE_URL=URL, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    client = boto3.client("sqs", region_name="ap-east-1")
    stub = Stubber(client)
    first = [{"Id": str(i), "MessageBody": json.dumps(b, separators=(",", ":"))} for i, b in enumerate(bodies(10))]
    stub.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": str(i), "MessageId": f"m{i}", "MD5OfMessageBody": "x"} for i in range(9)],
            "Failed": [{"Id": "9", "SenderFault": False, "Code": "InternalError"}],
        },
        {"QueueUrl": URL, "Entries": first},
    )
    stub.add_response(
        "send_message_batch",
        {"Successful": [{"Id": "9", "MessageId": "m9", "MD5OfMessageBody": "x"}], "Failed": []},
        {"QueueUrl": URL, "Entries": first[9:]},
    )
    stub.add_response(
        "send_message_batch",
        {"Successful": [{"Id": "0", "MessageId": "m10", "MD5OfMessageBody": "x"}], "Failed": []},
        {"QueueUrl": URL, "Entries": [{"Id": "0", "MessageBody": json.dumps(bodies(11)[10], separators=(",", ":"))}]},
    )
    monkeypatch.setattr(queue, "_sqs", lambda: client)
    with stub:
        assert queue.send_batch("payouts", bodies(11)) == 11
        stub.assert_no_pending_responses()


def test_without_a_queue_it_says_what_to_set(settings_env: Any) -> None:
    settings_env()
    with pytest.raises(RuntimeError, match="PAYOUT_QUEUE_URL"):
        queue.send_batch("payouts", bodies(1))
