"""`python -m devtools.redrive --queue`: dead-lettered messages back to their queue on moto's SQS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools import redrive
from tests.envutil import environ

pytestmark = pytest.mark.unit

REGION = "ap-east-1"


@pytest.fixture
def sqs() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    with environ(env), mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queues(sqs: Any) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    source = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    return source, dlq


def _bodies(sqs: Any, url: str) -> list[str]:
    found: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages"):
        found += [m["Body"] for m in messages]
    return found


def test_dead_letters_go_back_to_their_queue_at_most_max_at_a_time(sqs: Any) -> None:
    # Given 13 dead-lettered job messages, one with an attribute
    source, dlq = _queues(sqs)
    bodies = [json.dumps({"job": "settle", "tenant": f"wx{i:02d}"}) for i in range(13)]
    attribute = {"kind": {"DataType": "String", "StringValue": "retry"}}
    sqs.send_message(QueueUrl=dlq, MessageBody=bodies[0], MessageAttributes=attribute)
    for body in bodies[1:]:
        sqs.send_message(QueueUrl=dlq, MessageBody=body)

    # When 11 are redriven, then the rest
    first = redrive.redrive_sqs(sqs, source, 11)
    second = redrive.redrive_sqs(sqs, source, 100)

    # Then every message is on its queue once, none is left dead-lettered, the attribute kept
    assert (first["moved"], second["moved"]) == (11, 2)
    assert first["dead_letter_queue"] == dlq
    assert sorted(_bodies(sqs, source)) == sorted(bodies)
    assert _bodies(sqs, dlq) == []
    assert redrive.redrive_sqs(sqs, source, 10)["moved"] == 0


def test_a_queue_without_a_dead_letter_queue_is_refused(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="plain")["QueueUrl"]
    with pytest.raises(SystemExit, match="no dead-letter queue"):
        redrive.redrive_sqs(sqs, url, 10)


def test_the_cli_uses_the_queue_url_of_the_settings(sqs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.settings import get_settings

    source, dlq = _queues(sqs)
    sqs.send_message(QueueUrl=dlq, MessageBody='{"job":"settle","tenant":"wx01"}')
    get_settings.cache_clear()
    try:
        env = {
            "JOBS_QUEUE_URL": source,
            "TABLE_PREFIX": "redrive",
            "JWT_SECRET": "s" * 32,
            "WECHAT_MODE": "sandbox",
            "AWS_REGION": REGION,  # the suite's environment may name another region (make test: ap-shanghai)
            "AWS_DEFAULT_REGION": REGION,
        }
        with environ(env):
            assert redrive.main(["--queue", "jobs", "--max", "5"]) == 0
    finally:
        get_settings.cache_clear()
    assert json.loads(capsys.readouterr().out)["moved"] == 1
    assert _bodies(sqs, source) == ['{"job":"settle","tenant":"wx01"}']
