"""A local twin of WeChat's merchant transfers: bills kept in SQLite (so the API process and the
event runner share them), the user's confirmation, signed and encrypted MCHTRANSFER callbacks
verified by the live code, and faults (`FAULTS`) armed by tests and demos.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from chalicelib.errors import InvalidInput, Missing, StateConflict
from chalicelib.wechat.outbox import Outbox, immediate
from chalicelib.wechat.pay.protocol import PayConfig, check_notify_url
from chalicelib.wechat.pay.sandbox import SandboxWeChatPay
from chalicelib.wechat.transfer.live import LiveTransfer
from chalicelib.wechat.transfer.protocol import (
    NOTIFICATION_EVENT,
    RESOURCE_TYPE,
    TransferBill,
    TransferRejected,
    TransferUnclear,
    bill_from,
    check_bill,
    create_answer,
    query_answer,
)

FAULTS = frozenset(
    {
        "timeout_before_accept",  # create: raises TransferUnclear, creates nothing
        "timeout_after_accept",  # create: the bill is created, then TransferUnclear
        "error_500",  # create or query: HTTP 500 SYSTEM_ERROR, no effect
        "reject",  # create: NOT_ENOUGH, no bill
        "succeed",  # create: straight to SUCCESS, no user confirmation
        "fail",  # the bill ends FAIL (at creation, or when the user confirms)
        "repeat_callbacks",  # user_confirm returns the notification `times` times
        "query_delay",  # queries answer the state before the last change for `seconds`
        "drop_callback",  # user_confirm: the callback is never delivered (lost)
        "delay_callback",  # user_confirm: the callback is delivered only after `seconds`
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bills (
    mchid TEXT NOT NULL, out_bill_no TEXT NOT NULL, state TEXT NOT NULL, prev_state TEXT,
    changed_at REAL NOT NULL, transfer_bill_no TEXT NOT NULL, package_info TEXT,
    fail_reason TEXT, amount INTEGER NOT NULL, openid TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (mchid, out_bill_no));
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT, fault TEXT NOT NULL, remaining INTEGER NOT NULL,
    out_bill_no TEXT, seconds REAL NOT NULL DEFAULT 0);
"""


class SandboxTransfer:
    """WeChat's transfer side, played locally; see the module docstring."""

    def __init__(
        self, config: PayConfig, wechat_private_key_pem: str, db_path: Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._pay = SandboxWeChatPay(config, wechat_private_key_pem, clock=clock)
        self._live = LiveTransfer(self._pay.live, config, scene_id="1005", report_infos=[])
        self._config = config
        self._db = Path(db_path)
        self._clock = clock
        self.mch_id = config.mchid
        self.appid = config.appid
        self._db.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._db, timeout=30)
        try:
            db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); executescript manages its own transaction
        finally:
            db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One connection and one immediate (write-locking) transaction: safe across processes."""
        with immediate(self._db) as db:
            yield db

    # --- faults -------------------------------------------------------------------------------

    def inject(self, fault: str, *, times: int = 1, out_bill_no: str | None = None, seconds: float = 0.0) -> None:
        """Arm a fault for the next `times` calls it applies to (of one bill, or of any)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; faults: {', '.join(sorted(FAULTS))}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._tx() as db:
            db.execute(
                "INSERT INTO faults (fault, remaining, out_bill_no, seconds) VALUES (?, ?, ?, ?)",
                (fault, times, out_bill_no, seconds),
            )

    def clear_faults(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM faults")

    @staticmethod
    def _take(db: sqlite3.Connection, fault: str, out_bill_no: str, *, all_left: bool = False) -> tuple[int, float]:
        """Consume an armed fault applying to this bill: (times it fires, seconds), or (0, 0)."""
        row = db.execute(
            "SELECT id, remaining, seconds FROM faults WHERE fault = ? AND remaining > 0 "
            "AND (out_bill_no IS NULL OR out_bill_no = ?) ORDER BY id LIMIT 1",
            (fault, out_bill_no),
        ).fetchone()
        if row is None:
            return 0, 0.0
        used = row[1] if all_left else 1
        db.execute("UPDATE faults SET remaining = remaining - ? WHERE id = ?", (used, row[0]))
        return used, float(row[2])

    # --- the API ------------------------------------------------------------------------------

    def create_bill(
        self, *, out_bill_no: str, openid: str, amount_fen: int, remark: str, user_name: str | None = None
    ) -> TransferBill:
        check_bill(out_bill_no, openid, amount_fen, remark, user_name)
        try:
            check_notify_url(self._config.notify_url)
        except InvalidInput as exc:  # WeChat: PARAM_ERROR, no bill
            raise TransferRejected("PARAM_ERROR", f"notify_url格式不正确: {exc.message}") from exc
        with self._tx() as db:  # faults are consumed in the transaction; errors are raised after it
            outcome = self._create(db, out_bill_no, openid, amount_fen)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _create(
        self, db: sqlite3.Connection, out_bill_no: str, openid: str, amount_fen: int
    ) -> TransferBill | Exception:
        if self._take(db, "error_500", out_bill_no)[0]:
            return TransferUnclear("WeChat Pay answered HTTP 500 SYSTEM_ERROR (sandbox fault)")
        if self._take(db, "timeout_before_accept", out_bill_no)[0]:
            return TransferUnclear("timed out before WeChat accepted the bill (sandbox fault)")
        existing = self._row(db, out_bill_no)
        if existing is not None:
            if existing.openid != openid or existing.amount_fen != amount_fen:
                return TransferRejected("INVALID_REQUEST", "out_bill_no was used for another transfer")
            return self._created(db, out_bill_no)
        if self._take(db, "reject", out_bill_no)[0]:
            return TransferRejected("NOT_ENOUGH", "商户运营账户资金不足 (sandbox fault)")
        state, reason = "WAIT_USER_CONFIRM", None
        if self._take(db, "succeed", out_bill_no)[0]:
            state = "SUCCESS"
        elif self._take(db, "fail", out_bill_no)[0]:
            state, reason = "FAIL", "ACCOUNT_FROZEN"
        now = self._clock()
        package = self._package(out_bill_no) if state == "WAIT_USER_CONFIRM" else None
        db.execute(
            "INSERT INTO bills VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.mch_id,
                out_bill_no,
                state,
                now,
                self._bill_no(out_bill_no),
                package,
                reason,
                amount_fen,
                openid,
                now,
            ),
        )
        if self._take(db, "timeout_after_accept", out_bill_no)[0]:
            return TransferUnclear("timed out after WeChat accepted the bill (sandbox fault)")
        return self._created(db, out_bill_no)

    def _created(self, db: sqlite3.Connection, out_bill_no: str) -> TransferBill | Exception:
        """The create answer, read the way the live client reads WeChat's JSON."""
        bill = self._row(db, out_bill_no)
        if bill is None:
            return TransferUnclear("the sandbox lost a bill")
        return bill_from(create_answer(bill, self._created_at(db, out_bill_no)), out_bill_no)

    def query_bill(self, out_bill_no: str) -> TransferBill | None:
        """WeChat's query answer, read the way the live client reads it (no package_info)."""
        answer = self.query_answer(out_bill_no)
        return None if answer is None else bill_from(answer, out_bill_no)

    def query_answer(self, out_bill_no: str) -> dict[str, Any] | None:
        """The JSON WeChat answers to 商户单号查询转账单, or None for NOT_FOUND."""
        with self._tx() as db:
            failed = self._take(db, "error_500", out_bill_no)[0]
        if failed:
            raise TransferUnclear("WeChat Pay answered HTTP 500 SYSTEM_ERROR (sandbox fault)")
        with self._tx() as db:
            bill = self._row(db, out_bill_no)
            if bill is None:
                return None
            prev, changed, created = db.execute(
                "SELECT prev_state, changed_at, created_at FROM bills WHERE mchid = ? AND out_bill_no = ?",
                (self.mch_id, out_bill_no),
            ).fetchone()
            if prev:
                row = db.execute(
                    "SELECT id, seconds FROM faults WHERE fault = 'query_delay' AND remaining > 0 "
                    "AND (out_bill_no IS NULL OR out_bill_no = ?) ORDER BY id LIMIT 1",
                    (out_bill_no,),
                ).fetchone()
                if row is not None and self._clock() - changed < row[1]:
                    db.execute("UPDATE faults SET remaining = remaining - 1 WHERE id = ?", (row[0],))
                    bill = TransferBill(
                        out_bill_no, prev, bill.transfer_bill_no, None, None, bill.amount_fen, bill.openid
                    )
                    changed = created
            return query_answer(bill, self.mch_id, self.appid, created, changed)

    def create_answer(self, out_bill_no: str) -> dict[str, Any]:
        """The JSON WeChat answers to 发起转账 for this bill (a repeat answers like the first)."""
        with self._tx() as db:
            bill = self._row(db, out_bill_no)
            if bill is None:
                raise Missing("WeChat knows no such transfer", code="unknown_transfer")
            return create_answer(bill, self._created_at(db, out_bill_no))

    def cancel_bill(self, out_bill_no: str) -> TransferBill:
        with self._tx() as db:
            bill = self._row(db, out_bill_no)
            if bill is None:
                raise TransferRejected("NOT_FOUND", "记录不存在")
            if bill.state in ("ACCEPTED", "WAIT_USER_CONFIRM"):
                self._set_state(db, bill, "CANCELLED", None)
            return self._row(db, out_bill_no) or bill

    def user_confirm(self, out_bill_no: str) -> list[tuple[dict[str, str], bytes]]:
        """The user confirms in WeChat: the bill succeeds (or fails, if armed) and WeChat POSTs its
        callback to the notify_url the bill was created with (repeated, if armed), retried until
        answered 2xx (see `outbox`). Returns the callbacks sent."""
        with self._tx() as db:
            bill = self._row(db, out_bill_no)
            if bill is None:
                raise Missing("WeChat knows no such transfer", code="unknown_transfer")
            if bill.state != "WAIT_USER_CONFIRM":
                raise StateConflict(f"the transfer is {bill.state}, not waiting for the user", code="not_waiting")
            fail = self._take(db, "fail", out_bill_no)[0]
            self._set_state(db, bill, "FAIL" if fail else "SUCCESS", "ACCOUNT_FROZEN" if fail else None)
            repeats, _ = self._take(db, "repeat_callbacks", out_bill_no, all_left=True)
            dropped = self._take(db, "drop_callback", out_bill_no)[0]
            delayed, delay = self._take(db, "delay_callback", out_bill_no)
            finished = self._row(db, out_bill_no)
        assert finished is not None  # noqa: S101
        notification = self._notification(finished)
        sent = [notification] * max(1, repeats)
        if not dropped:
            self._post([body for _, body in sent], delay if delayed else 0.0)
        return sent

    def _post(self, bodies: list[bytes], delay: float) -> None:
        """Queue WeChat's callbacks for the notify_url and (unless delayed) try them at once."""
        outbox = Outbox(self._db.parent / "outbox.sqlite3")
        due = self._clock() + delay
        ids = [
            outbox.add(
                self._config.notify_url,
                body,
                signer_pem=self._pay.wechat_key_pem,
                signer_id=self._config.public_key_id,
                due_at=due,
            )
            for body in bodies
        ]
        if not delay:
            outbox.deliver(ids)

    def notification_for(self, out_bill_no: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of the callback WeChat would send for the bill's current state."""
        with self._tx() as db:
            bill = self._row(db, out_bill_no)
        if bill is None:
            raise Missing("WeChat knows no such transfer", code="unknown_transfer")
        return self._notification(bill)

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> TransferBill:
        return self._live.parse_notification(headers, body)

    # --- internals ----------------------------------------------------------------------------

    def _notification(self, bill: TransferBill) -> tuple[dict[str, str], bytes]:
        resource: dict[str, Any] = {
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "state": bill.state,
            "mch_id": self.mch_id,
            "transfer_amount": bill.amount_fen,
            "openid": bill.openid,
            "create_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(self._clock() + 8 * 3600)),
            "update_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(self._clock() + 8 * 3600)),
        }
        if bill.fail_reason:
            resource["fail_reason"] = bill.fail_reason
        return self._pay.notification(NOTIFICATION_EVENT, "商家转账单据终态通知", RESOURCE_TYPE, resource)

    def _created_at(self, db: sqlite3.Connection, out_bill_no: str) -> float:
        row = db.execute(
            "SELECT created_at FROM bills WHERE mchid = ? AND out_bill_no = ?", (self.mch_id, out_bill_no)
        ).fetchone()
        return float(row[0]) if row else self._clock()

    def _row(self, db: sqlite3.Connection, out_bill_no: str) -> TransferBill | None:
        row = db.execute(
            "SELECT state, transfer_bill_no, package_info, fail_reason, amount, openid FROM bills "
            "WHERE mchid = ? AND out_bill_no = ?",
            (self.mch_id, out_bill_no),
        ).fetchone()
        if row is None:
            return None
        return TransferBill(out_bill_no, row[0], row[1], row[2], row[3], int(row[4]), row[5])

    def _set_state(self, db: sqlite3.Connection, bill: TransferBill, state: str, reason: str | None) -> None:
        db.execute(
            "UPDATE bills SET prev_state = state, state = ?, changed_at = ?, package_info = NULL, fail_reason = ? "
            "WHERE mchid = ? AND out_bill_no = ?",
            (state, self._clock(), reason, self.mch_id, bill.out_bill_no),
        )

    def _bill_no(self, out_bill_no: str) -> str:
        return "1330" + hashlib.sha256(f"{self.mch_id}:{out_bill_no}".encode()).hexdigest()[:28]

    def _package(self, out_bill_no: str) -> str:
        digest = hashlib.sha256(f"package:{self.mch_id}:{out_bill_no}".encode()).hexdigest()
        return "ABBQO+oYAAABAAAAAAB" + digest[:40] + uuid.UUID(digest[:32]).hex[:8]
