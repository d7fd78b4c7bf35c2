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

from chalicelib.errors import BadRequest, Conflict, DomainError, Unauthorized, UpstreamError

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


class WeChatPay(Protocol):
    """What the app needs from WeChat Pay."""

    def jsapi_prepay(self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str) -> Prepay: ...

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

    def jsapi_prepay(self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str) -> Prepay:
        check_prepay(out_trade_no, description, amount_fen, payer_openid)
        data = self._call(
            lambda: self._client.pay(
                description=description,
                out_trade_no=out_trade_no,
                amount={"total": amount_fen, "currency": "CNY"},
                payer={"openid": payer_openid},
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


class SandboxWeChatPay:
    """A local twin of WeChat Pay, holding the WeChat-side private key whose public half is in `config`.

    Prepay and refund answer at once (deterministic ids, so repeats are idempotent like WeChat);
    `notification_for` builds what WeChat would POST to `notify_url`; `parse_notification` is the
    live client's.
    """

    def __init__(
        self, config: PayConfig, wechat_private_key_pem: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        if _public_pem(wechat_private_key_pem).strip() != config.public_key_pem.strip():
            raise ValueError("the sandbox's WeChat-side key does not match config.public_key_pem")
        self._config = config
        self._wechat_key_pem = wechat_private_key_pem
        self._clock = clock
        self._live = LiveWeChatPay(config, clock=clock)

    def jsapi_prepay(self, *, out_trade_no: str, description: str, amount_fen: int, payer_openid: str) -> Prepay:
        check_prepay(out_trade_no, description, amount_fen, payer_openid)
        return self._live.request_payment(_sandbox_id("sbx_", self._config.mchid, out_trade_no))

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> PaymentNotice:
        return self._live.parse_notification(headers, body)

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, total_fen: int, refund_fen: int, reason: str
    ) -> RefundResult:
        check_refund(out_trade_no, out_refund_no, total_fen, refund_fen, reason)
        refund_id = _sandbox_id("sbx_refund_", self._config.mchid, out_refund_no)
        return RefundResult(out_refund_no=out_refund_no, refund_id=refund_id, status="SUCCESS")

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
