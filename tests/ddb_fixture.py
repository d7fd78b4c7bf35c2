"""Pytest plugin: a session-wide DynamoDB Local for integration tests.

``ddb_endpoint`` starts DynamoDB Local in memory on a free port (never 8000/8001, so it does
not clash with ``make run``), points the AWS environment variables at it with dummy
credentials for the whole session, and stops it at the end. Set ``DDB_LOCAL_ENDPOINT`` to
reuse an instance that is already running (e.g. ``http://127.0.0.1:8001``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.ddb_local import (
    LocalStackError,
    ensure_ddb_local,
    free_port,
    local_aws_env,
    start_ddb_local,
    stop,
    wait_until_ready,
)
from tests.envutil import environ

PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_ATTEMPTS = 3


def _start_in_memory(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start an in-memory DynamoDB Local on a free port, retrying if the port got taken meanwhile."""
    jar_dir = ensure_ddb_local(PROJECT_ROOT / ".local" / "ddb")
    error: LocalStackError | None = None
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        try:
            proc = start_ddb_local(port, None, log_dir / f"ddb-local-{attempt}.log", jar_dir=jar_dir)
        except LocalStackError as exc:
            error = exc
            continue
        return proc, f"http://127.0.0.1:{port}"
    raise LocalStackError(f"could not start DynamoDB Local: {error}")


@pytest.fixture(scope="session")
def ddb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of a DynamoDB Local instance; the AWS env points at it for the session."""
    proc: subprocess.Popen[bytes] | None = None
    endpoint = os.environ.get("DDB_LOCAL_ENDPOINT", "").rstrip("/")
    try:
        if endpoint:
            wait_until_ready(endpoint, None, None, timeout=15.0)
        else:
            proc, endpoint = _start_in_memory(tmp_path_factory.mktemp("ddb-local"))
    except LocalStackError as exc:
        pytest.fail(f"DynamoDB Local unavailable: {exc}", pytrace=False)
    try:
        with environ(local_aws_env(endpoint)):
            yield endpoint
    finally:
        stop(proc)
