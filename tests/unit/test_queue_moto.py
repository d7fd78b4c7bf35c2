"""The queues on moto's SQS: the sender as it runs in AWS, and the template's redrive settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import get_settings
from chalicelib.store import queue
from tests.envutil import environ

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = json.loads((ROOT / "infra" / "merge-prod.json").read_text())["Resources"]
REGION = "ap-east-1"


@pytest.fixture
def sqs() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    with environ(env), mock_aws():
        queue._sqs.cache_clear()
        yield boto3.client("sqs", region_name=REGION)
    queue._sqs.cache_clear()
    get_settings.cache_clear()


def create_like_the_template(sqs: Any, logical: str) -> tuple[str, str]:
    """The queue and its dead-letter queue with the template's settings; (queue url, dlq url)."""
    props = TEMPLATE[logical]["Properties"]
    dead_logical = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    dead = TEMPLATE[dead_logical]["Properties"]
    dlq_url = sqs.create_queue(QueueName=dead["QueueName"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": props["RedrivePolicy"]["maxReceiveCount"]}
    url = sqs.create_queue(
        QueueName=props["QueueName"],
        Attributes={"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": "0"},
    )["QueueUrl"]
    return url, dlq_url


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        messages = answer.get("Messages") or []
        if not messages:
            return found
        found += [json.loads(m["Body"]) for m in messages]


@pytest.mark.parametrize(("logical", "setting", "name"), [("PayoutQueue", "PAYOUT_QUEUE_URL", "payouts"),
                                                            ("JobsQueue", "JOBS_QUEUE_URL", "jobs")])  # fmt: skip
def test_every_message_reaches_its_own_queue(sqs: Any, logical: str, setting: str, name: str) -> None:
    url, _ = create_like_the_template(sqs, logical)
    bodies = [{"tenant": "wxa", "n": i} for i in range(23)]
    with environ(
        {"TABLE_PREFIX": "unit", "JWT_SECRET": "unit-secret-0123456789", "WECHAT_MODE": "sandbox", setting: url}
    ):
        get_settings.cache_clear()
        assert queue.send_batch(name, bodies) == 23
    assert sorted(m["n"] for m in receive_all(sqs, url)) == list(range(23))


def test_a_payout_message_failing_five_times_is_dead_lettered_with_its_body(sqs: Any) -> None:
    url, dlq_url = create_like_the_template(sqs, "PayoutQueue")
    with environ(
        {
            "TABLE_PREFIX": "unit",
            "JWT_SECRET": "unit-secret-0123456789",
            "WECHAT_MODE": "sandbox",
            "PAYOUT_QUEUE_URL": url,
        }
    ):
        get_settings.cache_clear()
        queue.send_batch("payouts", [{"tenant": "wxa", "withdrawal": "W1", "run": "R1"}])
    receives = TEMPLATE["PayoutQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    for _ in range(receives):  # the worker fails: the message is never deleted
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages")
    assert not sqs.receive_message(QueueUrl=url).get("Messages")
    parked = sqs.receive_message(QueueUrl=dlq_url).get("Messages") or []
    assert [json.loads(m["Body"])["withdrawal"] for m in parked] == ["W1"]
