"""The sandbox twins' notifications, delivered the way WeChat delivers them: by HTTP POST.

WeChat Pay POSTs a signed, encrypted notification to the `notify_url` it was handed at prepay,
refund or transfer creation, and retries until it gets a 2xx answer (15 s, 15 s, 30 s, 3 min,
10 min, ... over about a day). The twins do the same: each notification goes into this outbox
(a SQLite file beside the sandbox keys, shared by the API process and the event runner), is
tried at once, and is retried by `deliver_due`, which the local event runner calls on every poll.
Each attempt is signed afresh, as WeChat does, so a retry is never refused as stale.

Nothing here calls a handler: the only way in is the URL. Tests without an HTTP server (the
Chalice test client) install a transport that routes the URL's path through the app's router.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from chalicelib.wechat import sandbox_dir
from chalicelib.wechat.pay.protocol import wechat_signature_headers

logger = logging.getLogger(__name__)

# (url, headers, body) -> HTTP status; raises OSError (or returns >= 500) when nobody answered.
Transport = Callable[[str, Mapping[str, str], bytes], int]

RETRY_SECONDS = (1, 2, 5, 15, 30, 60, 180, 600)  # shorter than WeChat's, same shape
MAX_ATTEMPTS = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, body BLOB NOT NULL,
    signer_pem TEXT NOT NULL, signer_id TEXT NOT NULL, due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, delivered_at REAL, last_status INTEGER, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, due_at);
"""

_lock = threading.Lock()
_transport: Transport | None = None


@contextlib.contextmanager
def immediate(path: Path) -> Iterator[sqlite3.Connection]:
    """One connection and one immediate (write-locking) transaction on a twin's SQLite file:
    safe across the processes of the local stack (the API and the event runner)."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


def http_transport(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """POST as WeChat does: JSON body, the `Wechatpay-*` headers, a short timeout."""
    import requests  # function-local: requests stays out of the Lambda's cold start

    try:
        answer = requests.post(
            url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=(3.05, 10)
        )
    except requests.RequestException as exc:
        raise OSError(str(exc)) from exc
    return int(answer.status_code)


def set_transport(transport: Transport | None) -> None:
    """Route notifications through `transport` (None: real HTTP). For tests without a server."""
    global _transport
    _transport = transport


def current_transport() -> Transport:
    return _transport or http_transport


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    url: str
    status: int | None


class Outbox:
    """Notifications waiting to be POSTed (one SQLite file, safe across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _lock, self._tx() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            yield db
        finally:
            db.close()

    def add(self, url: str, body: bytes, *, signer_pem: str, signer_id: str, due_at: float | None = None) -> int:
        """Queue a notification for `url`; it is signed with the WeChat-side key at each attempt."""
        now = time.time()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO outbox (url, body, signer_pem, signer_id, due_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (url, body, signer_pem, signer_id, now if due_at is None else due_at, now),
            )
            return int(cursor.lastrowid or 0)

    def deliver(self, ids: list[int] | None = None, *, now: float | None = None, limit: int = 100) -> list[Delivery]:
        """Try every due notification (or those of `ids` that are due); return what was tried."""
        moment = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, url, body, signer_pem, signer_id, attempts FROM outbox "
                "WHERE delivered_at IS NULL AND due_at <= ? AND attempts < ? ORDER BY due_at, id LIMIT ?",
                (moment, MAX_ATTEMPTS, limit),
            ).fetchall()
        tried: list[Delivery] = []
        for row_id, url, body, pem, signer_id, attempts in rows:
            if ids is not None and row_id not in ids:
                continue
            if not self._claim(row_id, attempts, moment):
                continue  # another process is delivering it
            text = bytes(body).decode("utf-8")
            headers = wechat_signature_headers(pem, signer_id, text)
            try:
                status: int | None = current_transport()(url, headers, bytes(body))
            except Exception as exc:  # nobody answered (refused, timed out, blocked): WeChat retries later
                logger.info("notification not delivered", extra={"url": url, "error": str(exc)[:200]})
                status = None
            self._finish(row_id, attempts + 1, status)
            tried.append(Delivery(row_id, url, status))
        return tried

    def _claim(self, row_id: int, attempts: int, now: float) -> bool:
        """Push the row's next attempt into the future, unless someone else did first."""
        retry = RETRY_SECONDS[min(attempts, len(RETRY_SECONDS) - 1)]
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE outbox SET due_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND attempts = ? AND delivered_at IS NULL",
                (now + retry, row_id, attempts),
            )
            return cursor.rowcount == 1

    def _finish(self, row_id: int, attempts: int, status: int | None) -> None:
        delivered = time.time() if status is not None and 200 <= status < 300 else None
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET delivered_at = ?, last_status = ? WHERE id = ? AND attempts = ?",
                (delivered, status, row_id, attempts),
            )

    def pending(self) -> list[dict[str, object]]:
        """Undelivered notifications (for tests and the console of the sandbox)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, url, attempts, last_status, due_at FROM outbox WHERE delivered_at IS NULL ORDER BY id"
            ).fetchall()
        return [{"id": r[0], "url": r[1], "attempts": r[2], "last_status": r[3], "due_at": r[4]} for r in rows]


def deliver_due(directory: Path | None = None) -> int:
    """Deliver what is due in the outbox under `directory` (default: the sandbox's); the local
    event runner calls this on each poll."""
    if directory is None:
        directory = sandbox_dir()
    path = Path(directory) / "outbox.sqlite3"
    if not path.exists():
        return 0
    return sum(1 for d in Outbox(path).deliver() if d.status is not None and 200 <= d.status < 300)
