"""The whole local stack in one command (``make run`` = ``python -m devtools.stack``).

DynamoDB Local (data persisted in ``.local/data``), the tables and the demo tenant,
``chalice local`` for HTTP and the event runner (streams, schedules, queue) in a thread of this
process. Ctrl-C stops everything cleanly. Ports: API 8000 (``API_PORT``), DynamoDB Local 8001
(``DDB_PORT``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from devtools.ddb_local import (
    LocalStackError,
    ensure_ddb_local,
    ensure_java,
    local_aws_env,
    port_in_use,
    start_ddb_local,
    stop,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
TABLE_PREFIX = "fenxiao-local"
DEFAULT_TENANT = "wxdemo0000000001"
HEALTH_PATH = "/v1/health"
STAGE = "local"

logger = logging.getLogger("stack")


class _Stop(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM to unwind into the clean-up."""


@dataclass(frozen=True)
class StackConfig:
    """Ports and derived URLs of the local stack."""

    api_port: int
    ddb_port: int

    @property
    def api_url(self) -> str:
        """Base URL of ``chalice local``."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ddb_endpoint(self) -> str:
        """Endpoint of DynamoDB Local."""
        return f"http://127.0.0.1:{self.ddb_port}"


def _env_port(name: str, default: int) -> int:
    """Read a port number from the environment variable ``name``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LocalStackError(f"{name}={raw!r} is not a port number")
    return int(raw)


def load_config() -> StackConfig:
    """Return the stack's ports (``API_PORT`` / ``DDB_PORT`` override 8000 / 8001)."""
    return StackConfig(api_port=_env_port("API_PORT", 8000), ddb_port=_env_port("DDB_PORT", 8001))


def busy_port_message(config: StackConfig) -> str | None:
    """Return one line explaining which port is taken, or None if both are free."""
    for name, port, what in (
        ("API_PORT", config.api_port, "the API"),
        ("DDB_PORT", config.ddb_port, "DynamoDB Local"),
    ):
        if port_in_use(port):
            return (
                f"port {port} ({what}) is already in use - is the stack already running? "
                f"Stop that process or set {name}."
            )
    return None


def jwt_secret(path: Path = LOCAL / "jwt_secret") -> str:
    """Return the local JWT secret, generated once and kept in ``.local/jwt_secret``."""
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def merchant_key(path: Path = LOCAL / "merchant_key") -> str:
    """Return the local key sealing merchant secrets, generated once and kept in ``.local/merchant_key``."""
    from chalicelib.secretbox import new_key

    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def stack_env(config: StackConfig) -> dict[str, str]:
    """Return the app's environment for the local stack."""
    return {
        **local_aws_env(config.ddb_endpoint),
        "TABLE_PREFIX": TABLE_PREFIX,
        "JWT_SECRET": jwt_secret(),
        "MERCHANT_KEY": merchant_key(),
        # The app's JSON logs at WARNING unless LOG_LEVEL says otherwise: INFO lines would bury the banner.
        "LOG_LEVEL": os.environ.get("LOG_LEVEL") or "WARNING",
        "WECHAT_MODE": "sandbox",
        "DEFAULT_TENANT": DEFAULT_TENANT,
        "PUBLIC_BASE_URL": config.api_url,
        "SANDBOX_KEYS_DIR": str(LOCAL / "wechatpay"),
        "LOCAL_QUEUE_DIR": str(LOCAL / "queues"),
        "LOCAL_EXPORTS_DIR": str(LOCAL / "exports"),
    }


def prepare_data() -> dict[str, Any]:
    """Create the tables and seed the demo tenant (both idempotent); return the seed summary."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from devtools.seed import seed_demo
    from devtools.tables import create_all_tables

    create_all_tables()
    info: dict[str, Any] = seed_demo()
    return info


def start_chalice(config: StackConfig) -> subprocess.Popen[bytes]:
    """Start `chalice local` (`devtools.local_api`: unknown routes answer our 404 as in production)
    in its own process group; output goes to this terminal."""
    cmd = [
        sys.executable, "-m", "devtools.local_api", "--host", "127.0.0.1", "--port", str(config.api_port),
        "--stage", STAGE,
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop ``proc`` and its children (chalice's reloader spawns a worker): SIGTERM, then SIGKILL."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def wait_for_api(config: StackConfig, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until ``chalice local`` accepts connections; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not port_in_use(config.api_port):
        if proc.poll() is not None:
            raise LocalStackError(f"chalice local exited with code {proc.returncode} (see its output above)")
        if time.monotonic() > deadline:
            raise LocalStackError(f"chalice local did not listen on {config.api_url} within {timeout:.0f}s")
        time.sleep(0.2)


def start_runner(config: StackConfig, stop_event: threading.Event) -> threading.Thread:
    """Import the app (after the env is set) and run the event runner in a daemon thread."""
    from chalicelib.wechat.outbox import deliver_due
    from devtools.runner import EventRunner, load_app, prefixed_table_name

    interval = os.environ.get("SCHEDULE_INTERVAL")
    runner = EventRunner(
        load_app(ROOT),
        table_name_for=prefixed_table_name(TABLE_PREFIX),
        endpoint_url=config.ddb_endpoint,
        state_dir=LOCAL / "runner",
        schedule_interval=float(interval) if interval else None,
        spool_dir=LOCAL / "queues",
        notifications=deliver_due,
        max_retries=6,  # Lambda's 1 + MaximumRetryAttempts (5): the app parks a record at its 5th failure
    )
    thread = threading.Thread(target=runner.run_forever, args=(stop_event,), name="event-runner", daemon=True)
    thread.start()
    return thread


def banner(config: StackConfig, info: dict[str, Any]) -> str:
    """Return the block printed once the stack is up."""
    users = list(info.get("demo_users") or ["alice"])
    merchant = dict(info.get("merchant") or {})
    interval = os.environ.get("SCHEDULE_INTERVAL")
    schedules = (
        f"every job every {interval} s (SCHEDULE_INTERVAL)"
        if interval
        else "each job at its own rate (settle hourly, payouts daily...); SCHEDULE_INTERVAL=<s> runs all every <s> s"
    )
    login = (
        f"curl -X POST {config.api_url}/v1/auth/login -H 'Content-Type: application/json' "
        f"""-d '{{"code":"dev-{users[0]}"}}'"""
    )
    lines = [
        "",
        "Local stack is up - Ctrl-C stops it.",
        f"  API             {config.api_url}/",
        f"  Admin console   {config.api_url}/admin",
        f"  Health          {config.api_url}{HEALTH_PATH}",
        f"  DynamoDB Local  {config.ddb_endpoint}  (data in {LOCAL.relative_to(ROOT)}/data)",
        f"  Tenant          {info.get('tenant', DEFAULT_TENANT)}",
        f"  Admin login     {info.get('admin_username')} / {info.get('admin_password')}",
        f"  Demo users      {', '.join(users)}  (login code: dev-<name>)",
        f"  Demo merchant   {merchant.get('id')} / {merchant.get('secret')}  (POST /v1/merchant/order-events)",
        f"  User login      {login}",
        "  WeChat          sandbox twins (dev-<name> logs anyone in; /v1/sandbox/* pays)",
        f"  Schedules       {schedules}",
        f"  Logs            LOG_LEVEL={os.environ.get('LOG_LEVEL') or 'WARNING'} (LOG_LEVEL=INFO shows every request)",
        "",
    ]
    return "\n".join(lines)


def _install_signal_handlers() -> None:
    """Turn SIGINT/SIGTERM into :class:`_Stop` once; further signals are ignored during clean-up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _supervise(chalice: subprocess.Popen[bytes], ddb: subprocess.Popen[bytes]) -> int:
    """Block until a child dies (exit code 1) or a signal arrives (handled by the caller)."""
    while True:
        for name, proc in (("chalice local", chalice), ("DynamoDB Local", ddb)):
            if proc.poll() is not None:
                print(f"stack: {name} exited unexpectedly with code {proc.returncode}", file=sys.stderr)
                return 1
        time.sleep(0.5)


def _serve(config: StackConfig, ddb: subprocess.Popen[bytes], stop_event: threading.Event) -> int:
    """With DynamoDB Local up: data, chalice, runner, banner, then supervise."""
    os.environ.update(stack_env(config))
    info = prepare_data()
    chalice: subprocess.Popen[bytes] | None = None
    runner: threading.Thread | None = None
    try:
        chalice = start_chalice(config)
        runner = start_runner(config, stop_event)
        wait_for_api(config, chalice)
        print(banner(config, info), flush=True)
        return _supervise(chalice, ddb)
    finally:
        stop_event.set()
        stop_group(chalice)
        if runner is not None:
            runner.join(timeout=15)


def run(config: StackConfig) -> int:
    """Start the stack and block until Ctrl-C; return the process exit code."""
    busy = busy_port_message(config)
    if busy:
        print(f"stack: {busy}", file=sys.stderr)
        return 1
    ensure_java()
    jar_dir = ensure_ddb_local(LOCAL / "ddb")
    stop_event = threading.Event()
    ddb: subprocess.Popen[bytes] | None = None
    _install_signal_handlers()
    try:
        ddb = start_ddb_local(config.ddb_port, LOCAL / "data", LOCAL / "logs" / "ddb-local.log", jar_dir=jar_dir)
        return _serve(config, ddb, stop_event)
    except _Stop:
        print("\nstack: stopped.", file=sys.stderr)
        return 0
    finally:
        stop(ddb)


# What `make reset` wipes: DynamoDB Local's data, the event runner's spools, the WeChat twins'
# state and keys (the JWT secret and merchant key stay, so tokens and the demo merchant survive).
RESET_DIRS = ("data", "queues", "wechatpay", "exports")


def reset(config: StackConfig) -> int:
    """Wipe the local data and seed the demo again (the stack must not be running)."""
    if busy_port_message(config):
        print("stack: stop `make run` first (Ctrl-C), then `make reset`", file=sys.stderr)
        return 1
    for name in RESET_DIRS:
        shutil.rmtree(LOCAL / name, ignore_errors=True)
    ensure_java()
    jar_dir = ensure_ddb_local(LOCAL / "ddb")
    ddb = start_ddb_local(config.ddb_port, LOCAL / "data", LOCAL / "logs" / "ddb-local.log", jar_dir=jar_dir)
    try:
        os.environ.update(stack_env(config))
        info = prepare_data()
    finally:
        stop(ddb)
    print(f"stack: local data wiped and the demo tenant {info['tenant']} seeded again; `make run` starts it.")
    return 0


def main() -> int:
    """Entry point of ``python -m devtools.stack`` (``--reset``: wipe and reseed, then exit)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("botocore", "pynamodb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.chdir(ROOT)
    try:
        if "--reset" in sys.argv[1:]:
            return reset(load_config())
        return run(load_config())
    except LocalStackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
