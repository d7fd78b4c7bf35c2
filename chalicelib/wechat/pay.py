"""WeChat Pay v3 for orders: JSAPI prepay, payment notifications, refunds; live and sandbox twins.

`LiveWeChatPay` wraps `wechatpayv3.WeChatPay` in public-key mode (the WeChat Pay public key and its
id are configured, so start-up never downloads platform certificates). `SandboxWeChatPay` plays
WeChat Pay locally with key pairs of its own: it answers prepay and refund calls, and builds payment
notifications exactly as WeChat sends them, which it then verifies through the live client's code.

Notes on wechatpayv3 2.0.4 that shape this module:
- `callback()` returns None both for a bad signature and for an undecryptable resource; it does not
  look at `Wechatpay-Timestamp` at all, and an unknown `Wechatpay-Serial` makes it download platform
  certificates. So the headers, serial and timestamp are checked here first.
- Its HTTP calls use the module-level `requests` functions (no injectable session), return
  `(status, text)` for any status, verify the signature of 2xx answers and raise a bare `Exception`
  when that fails.
- `refund()` sends the client's `notify_url` too, so refund notifications (`REFUND.*`) arrive at the
  payment notification URL; `parse_notification` maps them as well (see `PaymentNotice.event_type`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.errors import BadRequest, Conflict, DomainError, NotFound, Unauthorized, UpstreamError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

HTTP_TIMEOUT = (3.05, 10)
NOTIFICATION_MAX_SKEW_SECONDS = 300
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
SANDBOX_MCHID = "1900000109"
CHINA_TZ = timezone(timedelta(hours=8))
REFUND_STATES = frozenset({"SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED"})

_TIMESTAMP = "Wechatpay-Timestamp"
_NONCE = "Wechatpay-Nonce"
_SIGNATURE = "Wechatpay-Signature"
_SERIAL = "Wechatpay-Serial"
_SIGNATURE_TYPE = "Wechatpay-Signature-Type"
_NOTIFICATION_HEADERS = (_TIMESTAMP, _NONCE, _SIGNATURE, _SERIAL, _SIGNATURE_TYPE)

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


@dataclass(frozen=True, slots=True)
class PayConfig:
    """One merchant account (商户号) serving one mini-program."""

    mchid: str
    appid: str
    apiv3_key: str  # 32 bytes, AES-256-GCM key of notifications
    private_key_pem: str  # merchant API private key (signs requests, and JSAPI paySign)
    cert_serial_no: str  # merchant certificate serial
    public_key_pem: str  # WeChat Pay public key (public-key mode: verifies responses and callbacks)
    public_key_id: str  # its id, e.g. "PUB_KEY_ID_0114..."
    notify_url: str  # where payment notifications are sent

    def __repr__(self) -> str:  # keep the keys out of logs and tracebacks
        return f"PayConfig(mchid={self.mchid!r}, appid={self.appid!r}, public_key_id={self.public_key_id!r})"


@dataclass(frozen=True, slots=True)
class Prepay:
    """The parameters of `wx.requestPayment`."""

    app_id: str
    time_stamp: str
    nonce_str: str
    package: str
    sign_type: str
    pay_sign: str

    def js_params(self) -> dict[str, str]:
        """As the mini-program passes them to `wx.requestPayment` (camelCase)."""
        return {
            "timeStamp": self.time_stamp,
            "nonceStr": self.nonce_str,
            "package": self.package,
            "signType": self.sign_type,
            "paySign": self.pay_sign,
        }


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """A verified, decrypted notification.

    Payment (`TRANSACTION.SUCCESS`): `trade_state` is the transaction's, `amount_fen` the order
    total. Refund (`REFUND.SUCCESS` / `REFUND.ABNORMAL` / `REFUND.CLOSED`, sent to the same URL):
    `trade_state` is the refund status, `amount_fen` the refunded amount, `out_refund_no` is set and
    `payer_openid` is empty. `event_id` repeats when WeChat redelivers: use it to deduplicate.
    """

    out_trade_no: str
    transaction_id: str
    trade_state: str
    amount_fen: int
    payer_openid: str
    success_time: str | None
    event_id: str
    event_type: str = "TRANSACTION.SUCCESS"
    out_refund_no: str | None = None

    @property
    def is_refund(self) -> bool:
        return self.event_type.startswith("REFUND.")


@dataclass(frozen=True, slots=True)
class RefundResult:
    out_refund_no: str
    refund_id: str | None
    status: str  # SUCCESS / PROCESSING / ABNORMAL / CLOSED


@dataclass(frozen=True, slots=True)
class PaymentState:
    """WeChat's answer to an order query (查询订单): NOTPAY, SUCCESS, CLOSED, REFUND, PAYERROR, ..."""

    out_trade_no: str
    trade_state: str
    transaction_id: str | None
    amount_fen: int | None
    payer_openid: str | None
    success_time: str | None


class WeChatPay(Protocol):
    """What the app needs from WeChat Pay."""

    def jsapi_prepay(
        self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str, time_expire: datetime
    ) -> Prepay: ...

    def close(self, out_trade_no: str) -> None: ...

    def query(self, out_trade_no: str) -> PaymentState | None: ...

    def query_refund(self, out_refund_no: str) -> RefundResult | None: ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> PaymentNotice: ...

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, total_fen: int, refund_fen: int, reason: str
    ) -> RefundResult: ...


# --- rules shared by both twins ---------------------------------------------------------------


def check_prepay(out_trade_no: str, description: str, amount_fen: int, payer_openid: str) -> None:
    """WeChat's own limits on a JSAPI order, checked before calling it."""
    if not _OUT_TRADE_NO.fullmatch(out_trade_no):
        raise BadRequest("out_trade_no must be 6-32 letters, digits or _-|*", code="invalid_payment")
    if not description or len(description) > 127:
        raise BadRequest("the description must be 1-127 characters", code="invalid_payment")
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen < 1:
        raise BadRequest("the amount must be a positive number of fen", code="invalid_payment")
    if not payer_openid:
        raise BadRequest("the payer's openid is missing", code="invalid_payment")


def check_notify_url(url: str) -> None:
    """WeChat refuses a notify_url with a query string (通知URL不能携带参数) or without a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.scheme not in ("https", "http") or not parts.netloc:
        raise BadRequest(f"notify_url {url!r} must be an absolute URL without parameters", code="invalid_notify_url")


def china_time(moment: datetime) -> str:
    """RFC 3339 in China time, as WeChat Pay writes times (e.g. time_expire)."""
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def _payment_state(data: Mapping[str, Any], out_trade_no: str) -> PaymentState:
    state = data.get("trade_state")
    if not isinstance(state, str) or data.get("out_trade_no") != out_trade_no:
        raise UpstreamError("WeChat Pay answered the order query with something unexpected", code="wechatpay_error")
    amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
    payer = data.get("payer") if isinstance(data.get("payer"), dict) else {}
    total = amount.get("total") if amount else None
    return PaymentState(
        out_trade_no=out_trade_no,
        trade_state=state,
        transaction_id=_optional(data.get("transaction_id")),
        amount_fen=int(total) if isinstance(total, int) and not isinstance(total, bool) else None,
        payer_openid=_optional(payer.get("openid")) if payer else None,
        success_time=_optional(data.get("success_time")),
    )


def check_refund(out_trade_no: str, out_refund_no: str, total_fen: int, refund_fen: int, reason: str) -> None:
    """WeChat's own limits on a refund, checked before calling it."""
    if not _OUT_TRADE_NO.fullmatch(out_trade_no):
        raise BadRequest("out_trade_no must be 6-32 letters, digits or _-|*", code="invalid_refund")
    if not _OUT_REFUND_NO.fullmatch(out_refund_no):
        raise BadRequest("out_refund_no must be 1-64 letters, digits or _-|*@", code="invalid_refund")
    amounts = (total_fen, refund_fen)
    if any(isinstance(a, bool) or not isinstance(a, int) for a in amounts) or not 0 < refund_fen <= total_fen:
        raise BadRequest("the refund must be between 1 fen and the order total", code="invalid_refund")
    if len(reason) > 80:
        raise BadRequest("the refund reason must be at most 80 characters", code="invalid_refund")


def wechatpay_error(status: int, code: str, message: str) -> DomainError:
    """A WeChat Pay error answer as the domain error a client sees."""
    text = f"WeChat Pay error {code or '?'} (HTTP {status}): {message}"
    details = {"wechatpay_code": code}
    if code in {"ORDERPAID", "ORDER_PAID"}:
        return Conflict(f"the order is already paid ({text})", code="order_paid", details=details)
    if code in {"ORDERCLOSED", "ORDER_CLOSED"}:
        return Conflict(f"the order is closed ({text})", code="order_closed", details=details)
    if status >= 500 or status == 429 or code in {"SYSTEMERROR", "SYSTEM_ERROR", "FREQUENCY_LIMITED"}:
        return UpstreamError(text, code="wechatpay_unavailable", details=details)
    return UpstreamError(text, code="wechatpay_error", details=details)


def _answer(status: int, text: str | bytes) -> dict[str, Any]:
    """The JSON object of a WeChat Pay answer, or the domain error it stands for."""
    if status >= 500:
        raise UpstreamError(f"WeChat Pay answered HTTP {status}", code="wechatpay_unavailable")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"WeChat Pay answered HTTP {status} with something unexpected", code="wechatpay_error")
    if 200 <= status < 300:
        return data
    raise wechatpay_error(status, str(data.get("code", "")), str(data.get("message", "")))


def _refund_result(data: Mapping[str, Any], out_refund_no: str) -> RefundResult:
    status = data.get("status")
    if status not in REFUND_STATES or data.get("out_refund_no") != out_refund_no:
        raise UpstreamError("WeChat Pay answered the refund with something unexpected", code="wechatpay_error")
    refund_id = data.get("refund_id")
    return RefundResult(
        out_refund_no=out_refund_no, refund_id=str(refund_id) if refund_id else None, status=str(status)
    )


def _canonical_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The five `Wechatpay-*` headers under their canonical names, whatever case they arrived in."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    found: dict[str, str] = {}
    for name in _NOTIFICATION_HEADERS:
        value = lowered.get(name.lower())
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"the notification has no {name} header", code="bad_signature")
        found[name] = value
    return found


def _text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the notification body is not UTF-8", code="bad_notification") from exc


def _optional(value: Any) -> str | None:
    return str(value) if value else None


def _notice(data: Mapping[str, Any]) -> PaymentNotice:
    """The decrypted notification (the library's `callback()` shape) as a PaymentNotice."""
    resource = data["resource"]
    event_type = str(data["event_type"])
    amount = resource["amount"]
    if event_type.startswith("REFUND."):
        return PaymentNotice(
            out_trade_no=str(resource["out_trade_no"]),
            transaction_id=str(resource["transaction_id"]),
            trade_state=str(resource["refund_status"]),
            amount_fen=int(amount["refund"]),
            payer_openid="",
            success_time=_optional(resource.get("success_time")),
            event_id=str(data["id"]),
            event_type=event_type,
            out_refund_no=str(resource["out_refund_no"]),
        )
    return PaymentNotice(
        out_trade_no=str(resource["out_trade_no"]),
        transaction_id=str(resource.get("transaction_id") or ""),
        trade_state=str(resource["trade_state"]),
        amount_fen=int(amount["total"]),
        payer_openid=str(resource["payer"]["openid"]),
        success_time=resource.get("success_time"),
        event_id=str(data["id"]),
        event_type=event_type,
    )


# --- the live client --------------------------------------------------------------------------


class LiveWeChatPay:
    """The real WeChat Pay API v3 through `wechatpayv3`, in public-key mode (no start-up call).

    `client` replaces the `wechatpayv3.WeChatPay` built from `config` (the library talks through
    module-level `requests` calls, so there is no HTTP session to inject: stub it with `responses`).
    """

    def __init__(
        self,
        config: PayConfig,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        timeout: tuple[float, float] = HTTP_TIMEOUT,
    ) -> None:
        from wechatpayv3 import WeChatPayType
        from wechatpayv3.utils import load_public_key

        if len(config.apiv3_key.encode("utf-8")) != 32:
            raise UpstreamError("the APIv3 key must be 32 bytes", code="wechatpay_not_configured")
        try:
            self._public_key = load_public_key(config.public_key_pem)
            if client is None:
                from wechatpayv3 import WeChatPay as Client

                client = Client(
                    wechatpay_type=WeChatPayType.JSAPI,
                    mchid=config.mchid,
                    private_key=config.private_key_pem,
                    cert_serial_no=config.cert_serial_no,
                    appid=config.appid,
                    apiv3_key=config.apiv3_key,
                    notify_url=config.notify_url,
                    timeout=timeout,
                    public_key=config.public_key_pem,
                    public_key_id=config.public_key_id,
                )
        except Exception as exc:  # wechatpayv3 raises a bare Exception for unreadable keys
            raise UpstreamError(f"WeChat Pay is misconfigured: {exc}", code="wechatpay_not_configured") from exc
        self._config = config
        self._client = client
        self._jsapi = WeChatPayType.JSAPI
        self._clock = clock

    def _call(self, request: Callable[[], Any]) -> dict[str, Any]:
        """Run one library call; transport failures and unverifiable answers become UpstreamError."""
        import requests

        try:
            status, text = request()
        except requests.RequestException as exc:
            raise UpstreamError(f"WeChat Pay is unreachable: {exc}", code="wechatpay_unavailable") from exc
        except Exception as exc:  # the library's "failed to verify the signature" is a bare Exception
            raise UpstreamError(f"WeChat Pay answer refused: {exc}", code="wechatpay_error") from exc
        return _answer(int(status), text)

    def jsapi_prepay(
        self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str, time_expire: datetime
    ) -> Prepay:
        check_prepay(out_trade_no, description, amount_fen, payer_openid)
        data = self._call(
            lambda: self._client.pay(
                description=description,
                out_trade_no=out_trade_no,
                amount={"total": amount_fen, "currency": "CNY"},
                payer={"openid": payer_openid},
                time_expire=china_time(time_expire),
                pay_type=self._jsapi,
            )
        )
        prepay_id = data.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise UpstreamError("WeChat Pay returned no prepay_id", code="wechatpay_error")
        return self.request_payment(prepay_id)

    def request_payment(self, prepay_id: str) -> Prepay:
        """The signed `wx.requestPayment` parameters of a prepay id (RSA over appId, timeStamp, nonceStr, package)."""
        time_stamp = str(int(self._clock()))
        nonce_str = secrets.token_hex(16)
        package = f"prepay_id={prepay_id}"
        pay_sign = str(self._client.sign([self._config.appid, time_stamp, nonce_str, package]))
        return Prepay(
            app_id=self._config.appid,
            time_stamp=time_stamp,
            nonce_str=nonce_str,
            package=package,
            sign_type="RSA",
            pay_sign=pay_sign,
        )

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> PaymentNotice:
        """Verify (public key, serial, freshness) and decrypt a notification; map it to a PaymentNotice."""
        data = self.verified_callback(headers, body)
        try:
            notice = _notice(data)
            resource = data["resource"]
            # A refund's resource names no appid; a payment's must be this mini-program's.
            ours = resource["mchid"] == self._config.mchid and resource.get("appid", self._config.appid) == (
                self._config.appid
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadRequest("the notification lacks expected fields", code="bad_notification") from exc
        if not ours:
            raise BadRequest("the notification is for another merchant or mini-program", code="bad_notification")
        return notice

    def verified_callback(self, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
        """A notification's body with its resource decrypted, once its signature type, key id,
        freshness and signature are checked (any WeChat Pay notification: payments, transfers)."""
        found = _canonical_headers(headers)
        if found[_SIGNATURE_TYPE] != SIGNATURE_TYPE:
            raise Unauthorized("unsupported notification signature type", code="bad_signature")
        # Checked here: for an unknown serial the library would go and download platform certificates.
        if found[_SERIAL] != self._config.public_key_id:
            raise Unauthorized("the notification is signed with an unknown key", code="bad_signature")
        self._check_fresh(found[_TIMESTAMP])
        text = _text(body)
        try:
            data = self._client.callback(found, text)
        except Exception as exc:  # signed, but not the JSON/resource WeChat sends
            raise BadRequest("the notification is malformed", code="bad_notification") from exc
        if not data:
            from wechatpayv3.utils import rsa_verify

            if not rsa_verify(found[_TIMESTAMP], found[_NONCE], text, found[_SIGNATURE], self._public_key):
                raise Unauthorized("the notification's signature does not verify", code="bad_signature")
            raise BadRequest("the notification could not be decrypted", code="bad_notification")
        if not isinstance(data, dict):
            raise BadRequest("the notification is malformed", code="bad_notification")
        return data

    @property
    def client(self) -> Any:
        """The underlying `wechatpayv3.WeChatPay` (the transfer client shares it)."""
        return self._client

    def call(self, request: Callable[[], Any]) -> dict[str, Any]:
        """Run one library call and map its answer like every WeChat Pay call here."""
        return self._call(request)

    def _check_fresh(self, timestamp: str) -> None:
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise Unauthorized("the notification timestamp is not a number", code="bad_signature")
        if abs(self._clock() - int(timestamp)) > NOTIFICATION_MAX_SKEW_SECONDS:
            raise Unauthorized("the notification is too old or from the future", code="stale_notification")

    def close(self, out_trade_no: str) -> None:
        """Close an unpaid order (关闭订单): it can no longer be paid. Conflict `order_paid` if it was."""
        self._call(lambda: self._client.close(out_trade_no=out_trade_no))

    def query(self, out_trade_no: str) -> PaymentState | None:
        """The order as WeChat Pay knows it; None when it knows no such order (ORDER_NOT_EXIST)."""
        try:
            data = self._call(lambda: self._client.query(out_trade_no=out_trade_no))
        except UpstreamError as exc:
            if (exc.details or {}).get("wechatpay_code") in {"ORDER_NOT_EXIST", "ORDERNOTEXIST", "NOT_FOUND"}:
                return None
            raise
        return _payment_state(data, out_trade_no)

    def query_refund(self, out_refund_no: str) -> RefundResult | None:
        """A refund as WeChat Pay knows it; None when it knows no such refund (RESOURCE_NOT_EXISTS)."""
        try:
            data = self._call(lambda: self._client.query_refund(out_refund_no=out_refund_no))
        except UpstreamError as exc:
            if (exc.details or {}).get("wechatpay_code") in {"RESOURCE_NOT_EXISTS", "NOT_FOUND"}:
                return None
            raise
        return _refund_result(data, out_refund_no)

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, total_fen: int, refund_fen: int, reason: str
    ) -> RefundResult:
        """Ask for a refund; the same `out_refund_no` again returns the same refund (WeChat is idempotent on it)."""
        check_refund(out_trade_no, out_refund_no, total_fen, refund_fen, reason)
        data = self._call(
            lambda: self._client.refund(
                out_refund_no=out_refund_no,
                amount={"refund": refund_fen, "total": total_fen, "currency": "CNY"},
                out_trade_no=out_trade_no,
                reason=reason or None,
            )
        )
        return _refund_result(data, out_refund_no)


# --- the sandbox twin -------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _rsa_private_key(pem: str) -> RSAPrivateKey:
    """The key of a PEM, parsed (and validated, which is slow) once per process."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("expected an RSA private key")
    return key


@lru_cache(maxsize=16)
def _public_pem(private_pem: str) -> str:
    """The public half of a private key PEM, as a PEM."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = _rsa_private_key(private_pem).public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def wechat_signature_headers(
    private_key_pem: str, public_key_id: str, body: str, *, timestamp: int | None = None
) -> dict[str, str]:
    """The `Wechatpay-*` headers WeChat Pay puts on an answer or a notification with this body.

    Signs `timestamp\\nnonce\\nbody\\n` with RSA-SHA256 (PKCS#1 v1.5), as WeChat Pay does.
    """
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(16).upper()
    message = f"{stamp}\n{nonce}\n{body}\n".encode()
    signature = _rsa_private_key(private_key_pem).sign(message, PKCS1v15(), SHA256())
    return {
        _TIMESTAMP: stamp,
        _NONCE: nonce,
        _SIGNATURE: base64.b64encode(signature).decode("ascii"),
        _SERIAL: public_key_id,
        _SIGNATURE_TYPE: SIGNATURE_TYPE,
    }


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
        if _public_pem(wechat_private_key_pem).strip() != config.public_key_pem.strip():
            raise ValueError("the sandbox's WeChat-side key does not match config.public_key_pem")
        self._config = config
        self._wechat_key_pem = wechat_private_key_pem
        self._clock = clock
        self._live = LiveWeChatPay(config, clock=clock)
        self._refund_seconds = refund_seconds
        if db_path is None:
            import tempfile

            db_path = Path(tempfile.mkdtemp(prefix="fenxiao-paytwin-")) / "payments.sqlite3"
        self._db = Path(db_path)
        self._db.parent.mkdir(parents=True, exist_ok=True)
        import sqlite3

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
        from chalicelib.wechat.outbox import immediate

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
        except BadRequest as exc:
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
                raise NotFound("WeChat Pay knows no such order (no prepay)", code="unknown_payment")
            if row["state"] == "CLOSED":
                raise Conflict("the order is closed at WeChat Pay and cannot be paid", code="order_closed")
            if row["state"] == "NOTPAY" and now > float(row["time_expire"]):
                raise Conflict("the order's payment time has expired", code="order_expired")
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
        from chalicelib.wechat.outbox import Outbox

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
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


# --- sandbox keys -----------------------------------------------------------------------------

_MERCHANT_KEY_FILE = "apiclient_key.pem"  # the name WeChat's certificate tool gives it
_WECHAT_KEY_FILE = "wechatpay_private_key.pem"  # only the sandbox has this half
_WECHAT_PUBLIC_FILE = "pub_key.pem"  # the name of the public key WeChat Pay lets merchants download
_APIV3_FILE = "apiv3_key"


@dataclass(frozen=True, slots=True)
class SandboxKeys:
    """The sandbox's secrets: a merchant key pair, a WeChat-side key pair and an APIv3 key."""

    merchant_private_key_pem: str
    wechat_private_key_pem: str
    apiv3_key: str

    def __repr__(self) -> str:
        return f"SandboxKeys(cert_serial_no={self.cert_serial_no!r}, public_key_id={self.public_key_id!r})"

    @property
    def merchant_public_key_pem(self) -> str:
        return _public_pem(self.merchant_private_key_pem)

    @property
    def wechat_public_key_pem(self) -> str:
        return _public_pem(self.wechat_private_key_pem)

    @property
    def cert_serial_no(self) -> str:
        """40 hex digits derived from the merchant key, shaped like a real certificate serial."""
        return hashlib.sha1(self.merchant_public_key_pem.encode(), usedforsecurity=False).hexdigest().upper()

    @property
    def public_key_id(self) -> str:
        """`PUB_KEY_ID_` and digits derived from the WeChat-side key, shaped like a real one."""
        digits = str(int(hashlib.sha256(self.wechat_public_key_pem.encode()).hexdigest(), 16))[:30]
        return f"PUB_KEY_ID_01{digits}"

    def config(self, *, notify_url: str, appid: str, mchid: str = SANDBOX_MCHID) -> PayConfig:
        return PayConfig(
            mchid=mchid,
            appid=appid,
            apiv3_key=self.apiv3_key,
            private_key_pem=self.merchant_private_key_pem,
            cert_serial_no=self.cert_serial_no,
            public_key_pem=self.wechat_public_key_pem,
            public_key_id=self.public_key_id,
            notify_url=notify_url,
        )


def generate_sandbox_keys() -> SandboxKeys:
    """Fresh RSA-2048 key pairs and a 32-character APIv3 key (takes a fraction of a second)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    def pem() -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode("ascii")

    alphabet = string.ascii_letters + string.digits
    apiv3_key = "".join(secrets.choice(alphabet) for _ in range(32))
    return SandboxKeys(merchant_private_key_pem=pem(), wechat_private_key_pem=pem(), apiv3_key=apiv3_key)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the directory, so two local processes starting together agree on one set of keys."""
    import fcntl

    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)


def load_or_create_sandbox_keys(directory: Path) -> SandboxKeys:
    """The sandbox keys stored under `directory` (e.g. `.local/wechatpay/`), created on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    merchant, wechat, apiv3 = (directory / n for n in (_MERCHANT_KEY_FILE, _WECHAT_KEY_FILE, _APIV3_FILE))
    with _locked(directory):
        if merchant.is_file() and wechat.is_file() and apiv3.is_file():
            keys = SandboxKeys(
                merchant_private_key_pem=merchant.read_text("ascii"),
                wechat_private_key_pem=wechat.read_text("ascii"),
                apiv3_key=apiv3.read_text("ascii").strip(),
            )
        else:
            keys = generate_sandbox_keys()
            _write_private(merchant, keys.merchant_private_key_pem)
            _write_private(wechat, keys.wechat_private_key_pem)
            _write_private(apiv3, keys.apiv3_key + "\n")
            (directory / _WECHAT_PUBLIC_FILE).write_text(keys.wechat_public_key_pem, "ascii")
    return keys


def sandbox_config(
    notify_url: str, appid: str, directory: Path | None = None, *, mchid: str = SANDBOX_MCHID
) -> tuple[PayConfig, str]:
    """A sandbox merchant config and the WeChat-side private key that signs its notifications.

    With `directory` the keys persist there (restarts keep them); without, they are fresh.
    """
    keys = generate_sandbox_keys() if directory is None else load_or_create_sandbox_keys(directory)
    return keys.config(notify_url=notify_url, appid=appid, mchid=mchid), keys.wechat_private_key_pem
