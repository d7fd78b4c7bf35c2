"""Command line: ``python -m devtools.runner --app-dir . [--once|--drain|--list] [--job NAME] ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from chalice.app import Chalice

from devtools.runner.engine import EventRunner

DEFAULT_STATE_DIR = Path(".local/runner")
DESCRIPTION = "Local event runner: drives a Chalice app's stream, schedule and queue handlers."


def load_app(app_dir: Path) -> Chalice:
    """Import ``app`` from ``app_dir/app.py`` and return its Chalice object."""
    path = str(app_dir.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module("app")
    app = getattr(module, "app", None)
    if not isinstance(app, Chalice):
        raise TypeError(f"{path}/app.py has no Chalice object named `app`")
    return app


def prefixed_table_name(prefix: str) -> Callable[[str], str]:
    """Return a ``table_name_for`` mapping ``users`` to ``<prefix>-users`` (already prefixed names pass)."""

    def table_name_for(logical: str) -> str:
        return logical if logical.startswith(f"{prefix}-") else f"{prefix}-{logical}"

    return table_name_for


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the CLI arguments."""
    parser = argparse.ArgumentParser(prog="python -m devtools.runner", description=DESCRIPTION)
    parser.add_argument("--app-dir", type=Path, default=Path())
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass over streams and queues, then exit")
    mode.add_argument("--drain", action="store_true", help="poll until nothing is left, then exit")
    mode.add_argument("--list", action="store_true", help="print the discovered handlers as JSON")
    parser.add_argument("--job", action="append", help="only this handler (repeatable); a schedule fires once")
    parser.add_argument("--schedule-interval", type=float, help="fire every schedule every S seconds")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--endpoint", default=os.environ.get("DYNAMODB_ENDPOINT"))
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument(
        "--parallelization", type=int, help="concurrent batches per shard (default: the app's ParallelizationFactor)"
    )
    parser.add_argument(
        "--spool-dir", type=Path, default=os.environ.get("LOCAL_QUEUE_DIR"), help="queue spool (LOCAL_QUEUE_DIR)"
    )
    return parser.parse_args(argv)


def _build_runner(args: argparse.Namespace) -> EventRunner:
    """Create the runner from CLI arguments and the app's environment."""
    prefix = os.environ.get("TABLE_PREFIX")
    if not prefix or not args.endpoint:
        raise SystemExit("runner: TABLE_PREFIX and DYNAMODB_ENDPOINT must be set (the app's local env)")
    return EventRunner(
        load_app(args.app_dir),
        table_name_for=prefixed_table_name(prefix),
        endpoint_url=args.endpoint,
        state_dir=args.state_dir,
        schedule_interval=args.schedule_interval,
        max_retries=args.max_retries,
        batch_size=args.batch_size,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        only=args.job,
        spool_dir=args.spool_dir,
        parallelization=args.parallelization,
        notifications=_sandbox_notifications(),
    )


def _sandbox_notifications() -> Callable[[], int] | None:
    """In the sandbox, the runner also POSTs the WeChat twins' notifications that are due."""
    if os.environ.get("WECHAT_MODE") != "sandbox":
        return None
    from chalicelib.wechat.outbox import deliver_due

    return deliver_due


def _run_once(runner: EventRunner, drain: bool, jobs: list[str] | None) -> None:
    """Fire the schedules named with --job, then poll once or drain."""
    for job in runner.jobs:
        if jobs and job.kind == "schedule":
            print(f"{job.name}: {runner.fire_schedule(job.name)!r}")
    delivered = runner.drain(timeout=300.0) if drain else runner.poll_once()
    print(f"delivered {delivered} record(s)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devtools.runner``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runner = _build_runner(args)
    if args.list:
        print(json.dumps(runner.describe(), indent=2))
        return 0
    if args.once or args.drain:
        _run_once(runner, args.drain, args.job)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.run_forever(stop)
    return 0
