"""A local twin of WeChat Pay for orders: it answers prepay, query, close and refund calls from
WeChat's side of each order kept in SQLite, and sends payment and refund notifications exactly as
WeChat sends them (signed and encrypted with keys of its own, see `keys`), which the live client's
code then verifies. Faults (`PAY_FAULTS`) are armed by tests and demos.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from chalicelib.errors import InvalidInput, Missing, StateConflict
from chalicelib.wechat.outbox import Outbox, immediate
from chalicelib.wechat.pay.live import LiveWeChatPay
from chalicelib.wechat.pay.protocol import (
    CHINA_TZ,
    PayConfig,
    PaymentNotice,
    PaymentState,
    Prepay,
    RefundResult,
    check_notify_url,
    check_prepay,
    check_refund,
    public_pem,
    wechat_signature_headers,
    wechatpay_error,
)


def _china_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, CHINA_TZ).isoformat(timespec="seconds")


def _sandbox_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:28]


_PAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    mchid TEXT NOT NULL, out_trade_no TEXT NOT NULL, appid TEXT NOT NULL, amount INTEGER NOT NULL,
    openid TEXT NOT NULL, notify_url TEXT NOT NULL, state TEXT NOT NULL, transaction_id TEXT,
    success_time TEXT, time_expire REAL NOT NULL, refunded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mchid, out_trade_no));
CREATE TABLE IF NOT EXISTS refunds (
    mchid TEXT NOT NULL, out_refund_no TEXT NOT NULL, out_trade_no TEXT NOT NULL, amount INTEGER NOT NULL,
    total INTEGER NOT NULL, final_state TEXT NOT NULL, finish_at REAL NOT NULL,
    PRIMARY KEY (mchid, out_refund_no));
CREATE TABLE IF NOT EXISTS pay_faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT, fault TEXT NOT NULL, remaining INTEGER NOT NULL, ref TEXT);
"""

PAY_FAULTS = frozenset(
    {
        "close_unavailable",  # close: HTTP 500 SYSTEM_ERROR, the order stays payable
        "refund_unavailable",  # refund: HTTP 500 SYSTEM_ERROR, no refund created
        "refund_abnormal",  # the refund ends ABNORMAL (REFUND.ABNORMAL)
        "refund_closed",  # the refund ends CLOSED (REFUND.CLOSED)
        "drop_notification",  # the payment notification is never delivered (a lost callback)
    }
)
DEFAULT_REFUND_SECONDS = 2.0  # how long a sandbox refund stays PROCESSING


class SandboxWeChatPay:
    """A local twin of WeChat Pay, holding the WeChat-side private key whose public half is in `config`.

    It keeps WeChat's side of every order and refund in SQLite (`db_path`, shared by the API
    process and the event runner), the way WeChat's documentation describes it:
    - a prepaid order is NOTPAY and payable until its `time_expire` unless closed; a closed
      order cannot be paid; `query` answers the order's state;
    - `user_pays` plays the buyer paying in WeChat: the order becomes SUCCESS and the signed,
      encrypted TRANSACTION.SUCCESS notification is POSTed to the order's `notify_url`
      (retried until answered 2xx; see `outbox`);
    - a refund answers PROCESSING and finishes later (SUCCESS, or ABNORMAL / CLOSED when armed),
      POSTing REFUND.* to the notify_url;
    - a notify_url with a query string is refused, as WeChat refuses it.
    `parse_notification` is the live client's.
    """

    def __init__(
        self,
        config: PayConfig,
        wechat_private_key_pem: str,
        *,
        clock: Callable[[], float] = time.time,
        db_path: Path | None = None,
        refund_seconds: float = DEFAULT_REFUND_SECONDS,
    ) -> None:
        if public_pem(wechat_private_key_pem).strip() != config.public_key_pem.strip():
            raise ValueError("the sandbox's WeChat-side key does not match config.public_key_pem")
        self._config = config
        self._wechat_key_pem = wechat_private_key_pem
        self._clock = clock
        self._live = LiveWeChatPay(config, clock=clock)
        self._refund_seconds = refund_seconds
        if db_path is None:
            db_path = Path(tempfile.mkdtemp(prefix="fenxiao-paytwin-")) / "payments.sqlite3"
        self._db = Path(db_path)
        self._db.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._db, timeout=30)
        try:
            db.executescript(_PAY_SCHEMA)  # idempotent; executescript manages its own transaction
        finally:
            db.close()

    @property
    def config(self) -> PayConfig:
        return self._config

    @property
    def wechat_key_pem(self) -> str:
        """The WeChat-side private key the twin signs with (the sandbox's own, never a real one)."""
        return self._wechat_key_pem

    @property
    def outbox_path(self) -> Path:
        return self._db.parent / "outbox.sqlite3"

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:

        with immediate(self._db) as db:
            yield db

    # --- faults ---------------------------------------------------------------------------------

    def inject(self, fault: str, *, times: int = 1, ref: str | None = None) -> None:
        """Arm a fault for the next `times` calls it applies to (of one order/refund number, or any)."""
        if fault not in PAY_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; faults: {', '.join(sorted(PAY_FAULTS))}")
        with self._tx() as db:
            db.execute("INSERT INTO pay_faults (fault, remaining, ref) VALUES (?, ?, ?)", (fault, times, ref))

    def clear_faults(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pay_faults")

    @staticmethod
    def _take(db: Any, fault: str, ref: str) -> bool:
        row = db.execute(
            "SELECT id FROM pay_faults WHERE fault = ? AND remaining > 0 AND (ref IS NULL OR ref = ?) ORDER BY id",
            (fault, ref),
        ).fetchone()
        if row is None:
            return False
        db.execute("UPDATE pay_faults SET remaining = remaining - 1 WHERE id = ?", (row[0],))
        return True

    # --- the API --------------------------------------------------------------------------------

    def jsapi_prepay(
        self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str, time_expire: datetime
    ) -> Prepay:
        check_prepay(out_trade_no, description, amount_fen, payer_openid)
        try:
            check_notify_url(self._config.notify_url)
        except InvalidInput as exc:
            raise wechatpay_error(400, "PARAM_ERROR", f"notify_url格式不正确: {exc}") from exc
        mchid = self._config.mchid
        with self._tx() as db:
            row = db.execute(
                "SELECT state, amount FROM payments WHERE mchid = ? AND out_trade_no = ?", (mchid, out_trade_no)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO payments (mchid, out_trade_no, appid, amount, openid, notify_url, state, time_expire) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'NOTPAY', ?)",
                    (mchid, out_trade_no, self._config.appid, amount_fen, payer_openid, self._config.notify_url,
                     time_expire.timestamp()),
                )  # fmt: skip
            elif row[0] in ("SUCCESS", "REFUND"):
                raise wechatpay_error(400, "ORDERPAID", "该订单已支付")
            elif row[0] == "CLOSED":
                raise wechatpay_error(400, "ORDERCLOSED", "当前订单已关闭，请重新下单")
            elif int(row[1]) != amount_fen:
                raise wechatpay_error(400, "INVALID_REQUEST", "201 商户订单号重复")
        return self._live.request_payment(_sandbox_id("sbx_", mchid, out_trade_no))

    def close(self, out_trade_no: str) -> None:
        with self._tx() as db:  # a fault is consumed in the transaction, raised after it
            unavailable = self._take(db, "close_unavailable", out_trade_no)
        if unavailable:
            raise wechatpay_error(500, "SYSTEM_ERROR", "系统错误 (sandbox fault)")
        with self._tx() as db:
            row = self._payment_row(db, out_trade_no)
            if row is not None and row["state"] in ("SUCCESS", "REFUND"):
                raise wechatpay_error(400, "ORDERPAID", "订单已支付")
            if row is not None and row["state"] == "NOTPAY":
                db.execute(
                    "UPDATE payments SET state = 'CLOSED' WHERE mchid = ? AND out_trade_no = ?",
                    (self._config.mchid, out_trade_no),
                )

    def query(self, out_trade_no: str) -> PaymentState | None:
        with self._tx() as db:
            row = self._payment_row(db, out_trade_no)
        if row is None:
            return None
        paid = row["state"] in ("SUCCESS", "REFUND")
        return PaymentState(
            out_trade_no=out_trade_no,
            trade_state=str(row["state"]),
            transaction_id=str(row["transaction_id"]) if paid else None,
            amount_fen=int(row["amount"]),
            payer_openid=str(row["openid"]) if paid else None,
            success_time=str(row["success_time"]) if paid else None,
        )

    def user_pays(self, out_trade_no: str) -> PaymentState:
        """The buyer pays in WeChat: SUCCESS, then the notification is POSTed to notify_url."""
        now = self._clock()
        with self._tx() as db:
            row = self._payment_row(db, out_trade_no)
            if row is None:
                raise Missing("WeChat Pay knows no such order (no prepay)", code="unknown_payment")
            if row["state"] == "CLOSED":
                raise StateConflict("the order is closed at WeChat Pay and cannot be paid", code="order_closed")
            if row["state"] == "NOTPAY" and now > float(row["time_expire"]):
                raise StateConflict("the order's payment time has expired", code="order_expired")
            if row["state"] == "NOTPAY":
                db.execute(
                    "UPDATE payments SET state = 'SUCCESS', transaction_id = ?, success_time = ? "
                    "WHERE mchid = ? AND out_trade_no = ?",
                    (_sandbox_id("sbx_tx_", self._config.mchid, out_trade_no), _china_time(now), self._config.mchid,
                     out_trade_no),
                )  # fmt: skip
            dropped = self._take(db, "drop_notification", out_trade_no)
            row = self._payment_row(db, out_trade_no)
        assert row is not None  # noqa: S101 - read in the same transaction
        if not dropped:
            headers_body = self._payment_notification(row, now)
            self._post(str(row["notify_url"]), headers_body[1], due_at=now, at_once=True)
        state = self.query(out_trade_no)
        assert state is not None  # noqa: S101
        return state

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> PaymentNotice:
        return self._live.parse_notification(headers, body)

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, total_fen: int, refund_fen: int, reason: str
    ) -> RefundResult:
        check_refund(out_trade_no, out_refund_no, total_fen, refund_fen, reason)
        now = self._clock()
        mchid = self._config.mchid
        refund_id = _sandbox_id("sbx_refund_", mchid, out_refund_no)
        with self._tx() as db:  # a fault is consumed in the transaction, raised after it
            unavailable = self._take(db, "refund_unavailable", out_refund_no)
        if unavailable:
            raise wechatpay_error(500, "SYSTEM_ERROR", "系统错误 (sandbox fault)")
        with self._tx() as db:
            existing = db.execute(
                "SELECT amount FROM refunds WHERE mchid = ? AND out_refund_no = ?", (mchid, out_refund_no)
            ).fetchone()
            if existing is not None:  # idempotent on out_refund_no
                status = self._refund_status(db, out_refund_no, now)
                return RefundResult(out_refund_no=out_refund_no, refund_id=refund_id, status=status)
            payment = self._payment_row(db, out_trade_no)
            if payment is None or payment["state"] not in ("SUCCESS", "REFUND"):
                raise wechatpay_error(400, "INVALID_REQUEST", "订单未支付或不存在")
            if int(payment["amount"]) != total_fen:
                raise wechatpay_error(400, "PARAM_ERROR", "订单金额与原订单不一致")
            if int(payment["refunded"]) + refund_fen > total_fen:
                raise wechatpay_error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            final = "SUCCESS"
            if self._take(db, "refund_abnormal", out_refund_no):
                final = "ABNORMAL"
            elif self._take(db, "refund_closed", out_refund_no):
                final = "CLOSED"
            finish_at = now + self._refund_seconds
            db.execute(
                "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?)",
                (mchid, out_refund_no, out_trade_no, refund_fen, total_fen, final, finish_at),
            )
            db.execute(
                "UPDATE payments SET state = 'REFUND', refunded = refunded + ? WHERE mchid = ? AND out_trade_no = ?",
                (refund_fen if final == "SUCCESS" else 0, mchid, out_trade_no),
            )
            notify_url = str(payment["notify_url"])
        _, body = self.refund_notification_for(
            out_trade_no, out_refund_no, refund_fen, total_fen, final, timestamp=int(finish_at)
        )
        self._post(notify_url, body, due_at=finish_at)
        return RefundResult(out_refund_no=out_refund_no, refund_id=refund_id, status="PROCESSING")

    def query_refund(self, out_refund_no: str) -> RefundResult | None:
        with self._tx() as db:
            status = self._refund_status(db, out_refund_no, self._clock())
        if not status:
            return None
        refund_id = _sandbox_id("sbx_refund_", self._config.mchid, out_refund_no)
        return RefundResult(out_refund_no=out_refund_no, refund_id=refund_id, status=status)

    # --- internals ------------------------------------------------------------------------------

    def _payment_row(self, db: Any, out_trade_no: str) -> dict[str, Any] | None:
        cursor = db.execute(
            "SELECT * FROM payments WHERE mchid = ? AND out_trade_no = ?", (self._config.mchid, out_trade_no)
        )
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def _refund_status(self, db: Any, out_refund_no: str, now: float) -> str:
        row = db.execute(
            "SELECT final_state, finish_at FROM refunds WHERE mchid = ? AND out_refund_no = ?",
            (self._config.mchid, out_refund_no),
        ).fetchone()
        if row is None:
            return ""
        return str(row[0]) if now >= float(row[1]) else "PROCESSING"

    def _payment_notification(self, row: Mapping[str, Any], now: float) -> tuple[dict[str, str], bytes]:
        resource: dict[str, Any] = {
            "mchid": self._config.mchid,
            "appid": str(row["appid"]),
            "out_trade_no": str(row["out_trade_no"]),
            "transaction_id": str(row["transaction_id"]),
            "trade_type": "JSAPI",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": str(row["success_time"]),
            "payer": {"openid": str(row["openid"])},
            "amount": {"total": int(row["amount"]), "payer_total": int(row["amount"]), "currency": "CNY",
                       "payer_currency": "CNY"},
        }  # fmt: skip
        return self._notification("TRANSACTION.SUCCESS", "支付成功", "transaction", resource, now)

    def _post(self, url: str, body: bytes, *, due_at: float, at_once: bool = False) -> None:
        """Queue the notification for `url` and, like WeChat right after a payment, try it now."""

        outbox = Outbox(self.outbox_path)
        row = outbox.add(
            url, body, signer_pem=self._wechat_key_pem, signer_id=self._config.public_key_id, due_at=due_at
        )
        if at_once:
            outbox.deliver([row])

    def notification_for(
        self,
        out_trade_no: str,
        amount_fen: int,
        payer_openid: str,
        trade_state: str = "SUCCESS",
        *,
        timestamp: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of the payment notification WeChat Pay would send for this order."""
        now = self._clock() if timestamp is None else timestamp
        resource: dict[str, Any] = {
            "mchid": self._config.mchid,
            "appid": self._config.appid,
            "out_trade_no": out_trade_no,
            "transaction_id": _sandbox_id("sbx_tx_", self._config.mchid, out_trade_no),
            "trade_type": "JSAPI",
            "trade_state": trade_state,
            "trade_state_desc": "支付成功" if trade_state == "SUCCESS" else trade_state,
            "bank_type": "OTHERS",
            "attach": "",
            "payer": {"openid": payer_openid},
            "amount": {"total": amount_fen, "payer_total": amount_fen, "currency": "CNY", "payer_currency": "CNY"},
        }
        if trade_state == "SUCCESS":
            resource["success_time"] = _china_time(now)
        return self._notification("TRANSACTION.SUCCESS", "支付成功", "transaction", resource, now)

    def refund_notification_for(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        refund_status: str = "SUCCESS",
        *,
        timestamp: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of the refund notification WeChat Pay would send (to the same notify_url)."""
        now = self._clock() if timestamp is None else timestamp
        resource: dict[str, Any] = {
            "mchid": self._config.mchid,
            "out_trade_no": out_trade_no,
            "transaction_id": _sandbox_id("sbx_tx_", self._config.mchid, out_trade_no),
            "out_refund_no": out_refund_no,
            "refund_id": _sandbox_id("sbx_refund_", self._config.mchid, out_refund_no),
            "refund_status": refund_status,
            "user_received_account": "支付用户零钱",
            "amount": {"total": total_fen, "refund": refund_fen, "payer_total": total_fen, "payer_refund": refund_fen},
        }
        if refund_status == "SUCCESS":
            resource["success_time"] = _china_time(now)
        summary = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}.get(refund_status, "退款")
        return self._notification(f"REFUND.{refund_status}", summary, "refund", resource, now)

    def notification(
        self, event_type: str, summary: str, original_type: str, resource: Mapping[str, Any], now: float | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of any notification WeChat Pay would send (signed, resource encrypted)."""
        return self._notification(event_type, summary, original_type, resource, self._clock() if now is None else now)

    @property
    def live(self) -> LiveWeChatPay:
        """The live client over the sandbox's keys (what verifies the twin's notifications)."""
        return self._live

    def _notification(
        self, event_type: str, summary: str, original_type: str, resource: Mapping[str, Any], now: float
    ) -> tuple[dict[str, str], bytes]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # heavy: loaded on first use, not at cold start

        nonce = secrets.token_hex(6)  # WeChat uses a 12-character nonce
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = AESGCM(self._config.apiv3_key.encode()).encrypt(nonce.encode(), plaintext, original_type.encode())
        body = {
            "id": str(uuid.uuid4()),
            "create_time": _china_time(now),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode("ascii"),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        headers = wechat_signature_headers(self._wechat_key_pem, self._config.public_key_id, text, timestamp=int(now))
        return headers, text.encode()
