"""`python -m devtools.redrive --queue` on the local stack: a job message that keeps failing is
dead-lettered by the event runner, redriven back to the spool, then runs; a later message of the
same kind goes straight through."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.services import jobs
from chalicelib.store.queue import spool
from devtools import redrive
from tests.stack import Stack, unique

pytestmark = pytest.mark.integration


def _dead_letters(stack: Stack) -> list[dict[str, Any]]:
    folder = stack.runner.state_dir / "dlq"
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_a_dead_lettered_job_is_redriven_then_runs(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job whose runs fail (a tenant of its own, so the message is this test's)
    tenant = unique("wxdlq").replace("-", "")
    runs: list[tuple[str, str]] = []
    broken = True

    def run_for_tenant(job: str, who: str, *, actor: str) -> dict[str, Any]:
        runs.append((job, who))
        if broken:
            raise RuntimeError("the job's dependency is down")
        return {"ok": True}

    monkeypatch.setattr(jobs, "run_for_tenant", run_for_tenant)
    assert stack.runner.spool_dir is not None
    spool(stack.runner.spool_dir, "jobs", [{"job": "settle", "tenant": tenant}])

    # When the runner delivers it until it gives up
    stack.drain()

    # Then it is dead-lettered after every attempt failed
    mine = [e for e in _dead_letters(stack) if tenant in e["record"]["body"]]
    assert len(mine) == 1 and len(runs) > 1
    assert set(runs) == {("settle", tenant)}

    # When the dependency is back and the dead letters are redriven
    broken = False
    runs.clear()
    moved = redrive.redrive_local(stack.runner.state_dir, stack.runner.spool_dir, "jobs", 100)
    stack.drain()

    # Then the job runs once and is dead-lettered no more
    assert moved["moved"] >= 1
    assert runs.count(("settle", tenant)) == 1
    assert not [e for e in _dead_letters(stack) if tenant in e["record"]["body"]]

    # And a later message of the same kind goes straight through
    runs.clear()
    spool(stack.runner.spool_dir, "jobs", [{"job": "settle", "tenant": tenant}])
    stack.drain()
    assert runs == [("settle", tenant)]


def test_max_leaves_the_rest_dead_lettered_and_other_queues_alone(stack: Stack) -> None:
    # Given a dead-letter file with three jobs messages and one payouts message
    folder = stack.runner.state_dir / "dlq-max"
    (folder / "dlq").mkdir(parents=True)
    tenant = unique("wxdlq").replace("-", "")

    def entry(queue: str, n: int) -> str:
        body = json.dumps({"job": "settle", "tenant": tenant, "n": n})
        return json.dumps({"record": {"eventSourceARN": f"arn:aws:sqs:r:1:{queue}", "body": body}}) + "\n"

    (folder / "dlq" / "h.jsonl").write_text(
        entry("jobs", 1) + entry("payouts", 2) + entry("jobs", 3) + entry("jobs", 4)
    )
    spool_dir = folder / "spool"

    # When two jobs messages are redriven
    assert redrive.redrive_local(folder, spool_dir, "jobs", 2)["moved"] == 2

    # Then the first two are spooled to jobs, the others stay dead-lettered in their order
    spooled = [json.loads(p.read_text()) for p in sorted((spool_dir / "jobs").glob("*.json"))]
    assert [b["n"] for batch in spooled for b in batch] == [1, 3]
    left = [json.loads(json.loads(line)["record"]["body"])["n"] for line in (folder / "dlq" / "h.jsonl").open()]
    assert left == [2, 4]
    assert not list((folder / "dlq").glob(".*"))  # nothing claimed is left behind
