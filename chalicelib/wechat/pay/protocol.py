"""WeChat Pay API v3, the protocol both clients speak: the merchant's configuration, what the
app needs from WeChat Pay (`WeChatPay`), WeChat's own limits checked before any call, its answers
and notifications read into domain values, and its signature over answers and notifications.

Nothing here talks to WeChat: `live` does, through `wechatpayv3`; `sandbox` plays WeChat's side.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from chalicelib.errors import DomainError, InvalidInput, NotAuthenticated, StateConflict, UpstreamError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

NOTIFICATION_MAX_SKEW_SECONDS = 300
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
CHINA_TZ = timezone(timedelta(hours=8))
REFUND_STATES = frozenset({"SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED"})

TIMESTAMP_HEADER = "Wechatpay-Timestamp"
NONCE_HEADER = "Wechatpay-Nonce"
SIGNATURE_HEADER = "Wechatpay-Signature"
SERIAL_HEADER = "Wechatpay-Serial"
SIGNATURE_TYPE_HEADER = "Wechatpay-Signature-Type"
NOTIFICATION_HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, SERIAL_HEADER, SIGNATURE_TYPE_HEADER)

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


# --- WeChat's limits, answers and notifications ----------------------------------------------


def check_prepay(out_trade_no: str, description: str, amount_fen: int, payer_openid: str) -> None:
    """WeChat's own limits on a JSAPI order, checked before calling it."""
    if not _OUT_TRADE_NO.fullmatch(out_trade_no):
        raise InvalidInput("out_trade_no must be 6-32 letters, digits or _-|*", code="invalid_payment")
    if not description or len(description) > 127:
        raise InvalidInput("the description must be 1-127 characters", code="invalid_payment")
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen < 1:
        raise InvalidInput("the amount must be a positive number of fen", code="invalid_payment")
    if not payer_openid:
        raise InvalidInput("the payer's openid is missing", code="invalid_payment")


def check_notify_url(url: str) -> None:
    """WeChat refuses a notify_url with a query string (通知URL不能携带参数) or without a host."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.scheme not in ("https", "http") or not parts.netloc:
        raise InvalidInput(f"notify_url {url!r} must be an absolute URL without parameters", code="invalid_notify_url")


def china_time(moment: datetime) -> str:
    """RFC 3339 in China time, as WeChat Pay writes times (e.g. time_expire)."""
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def parse_payment_state(data: Mapping[str, Any], out_trade_no: str) -> PaymentState:
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
        raise InvalidInput("out_trade_no must be 6-32 letters, digits or _-|*", code="invalid_refund")
    if not _OUT_REFUND_NO.fullmatch(out_refund_no):
        raise InvalidInput("out_refund_no must be 1-64 letters, digits or _-|*@", code="invalid_refund")
    amounts = (total_fen, refund_fen)
    if any(isinstance(a, bool) or not isinstance(a, int) for a in amounts) or not 0 < refund_fen <= total_fen:
        raise InvalidInput("the refund must be between 1 fen and the order total", code="invalid_refund")
    if len(reason) > 80:
        raise InvalidInput("the refund reason must be at most 80 characters", code="invalid_refund")


def wechatpay_error(status: int, code: str, message: str) -> DomainError:
    """A WeChat Pay error answer as the domain error a client sees."""
    text = f"WeChat Pay error {code or '?'} (HTTP {status}): {message}"
    details = {"wechatpay_code": code}
    if code in {"ORDERPAID", "ORDER_PAID"}:
        return StateConflict(f"the order is already paid ({text})", code="order_paid", details=details)
    if code in {"ORDERCLOSED", "ORDER_CLOSED"}:
        return StateConflict(f"the order is closed ({text})", code="order_closed", details=details)
    if status >= 500 or status == 429 or code in {"SYSTEMERROR", "SYSTEM_ERROR", "FREQUENCY_LIMITED"}:
        return UpstreamError(text, code="wechatpay_unavailable", details=details)
    return UpstreamError(text, code="wechatpay_error", details=details)


def parse_answer(status: int, text: str | bytes) -> dict[str, Any]:
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


def parse_refund_result(data: Mapping[str, Any], out_refund_no: str) -> RefundResult:
    status = data.get("status")
    if status not in REFUND_STATES or data.get("out_refund_no") != out_refund_no:
        raise UpstreamError("WeChat Pay answered the refund with something unexpected", code="wechatpay_error")
    refund_id = data.get("refund_id")
    return RefundResult(
        out_refund_no=out_refund_no, refund_id=str(refund_id) if refund_id else None, status=str(status)
    )


def notification_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The five `Wechatpay-*` headers under their canonical names, whatever case they arrived in."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    found: dict[str, str] = {}
    for name in NOTIFICATION_HEADERS:
        value = lowered.get(name.lower())
        if not isinstance(value, str) or not value:
            raise NotAuthenticated(f"the notification has no {name} header", code="bad_signature")
        found[name] = value
    return found


def notification_text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the notification body is not UTF-8", code="bad_notification") from exc


def _optional(value: Any) -> str | None:
    return str(value) if value else None


def parse_notice(data: Mapping[str, Any]) -> PaymentNotice:
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


# --- signatures -------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def rsa_private_key(pem: str) -> RSAPrivateKey:
    """The key of a PEM, parsed (and validated, which is slow) once per process."""
    # heavy: cryptography is loaded on first use, not at the Lambda's cold start
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("expected an RSA private key")
    return key


@lru_cache(maxsize=16)
def public_pem(private_pem: str) -> str:
    """The public half of a private key PEM, as a PEM."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # heavy: not at cold start

    public = rsa_private_key(private_pem).public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def wechat_signature_headers(
    private_key_pem: str, public_key_id: str, body: str, *, timestamp: int | None = None
) -> dict[str, str]:
    """The `Wechatpay-*` headers WeChat Pay puts on an answer or a notification with this body.

    Signs `timestamp\\nnonce\\nbody\\n` with RSA-SHA256 (PKCS#1 v1.5), as WeChat Pay does.
    """
    # heavy: cryptography is loaded on first use, not at the Lambda's cold start
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(16).upper()
    message = f"{stamp}\n{nonce}\n{body}\n".encode()
    signature = rsa_private_key(private_key_pem).sign(message, PKCS1v15(), SHA256())
    return {
        TIMESTAMP_HEADER: stamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        SERIAL_HEADER: public_key_id,
        SIGNATURE_TYPE_HEADER: SIGNATURE_TYPE,
    }
