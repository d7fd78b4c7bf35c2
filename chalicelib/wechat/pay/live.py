"""The real WeChat Pay API v3 for orders: JSAPI prepay, order queries and closing, refunds, and
notifications verified and decrypted, through `wechatpayv3.WeChatPay` in public-key mode (the WeChat
Pay public key and its id are configured, so start-up never downloads platform certificates).

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

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chalicelib.errors import InvalidInput, NotAuthenticated, UpstreamError
from chalicelib.wechat.pay.protocol import (
    NONCE_HEADER,
    NOTIFICATION_MAX_SKEW_SECONDS,
    SERIAL_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_TYPE,
    SIGNATURE_TYPE_HEADER,
    TIMESTAMP_HEADER,
    PayConfig,
    PaymentNotice,
    PaymentState,
    Prepay,
    RefundResult,
    check_prepay,
    check_refund,
    china_time,
    notification_headers,
    notification_text,
    parse_answer,
    parse_notice,
    parse_payment_state,
    parse_refund_result,
)

HTTP_TIMEOUT = (3.05, 10)


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
        # heavy: wechatpayv3 (with cryptography and requests) loads with the first client, not at cold start
        from wechatpayv3 import WeChatPayType
        from wechatpayv3.utils import load_public_key

        if len(config.apiv3_key.encode("utf-8")) != 32:
            raise UpstreamError("the APIv3 key must be 32 bytes", code="wechatpay_not_configured")
        try:
            self._public_key = load_public_key(config.public_key_pem)
            if client is None:
                from wechatpayv3 import WeChatPay as Client  # heavy: not at cold start

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
        import requests  # heavy: not at cold start

        try:
            status, text = request()
        except requests.RequestException as exc:
            raise UpstreamError(f"WeChat Pay is unreachable: {exc}", code="wechatpay_unavailable") from exc
        except Exception as exc:  # the library's "failed to verify the signature" is a bare Exception
            raise UpstreamError(f"WeChat Pay answer refused: {exc}", code="wechatpay_error") from exc
        return parse_answer(int(status), text)

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
            notice = parse_notice(data)
            resource = data["resource"]
            # A refund's resource names no appid; a payment's must be this mini-program's.
            ours = resource["mchid"] == self._config.mchid and resource.get("appid", self._config.appid) == (
                self._config.appid
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput("the notification lacks expected fields", code="bad_notification") from exc
        if not ours:
            raise InvalidInput("the notification is for another merchant or mini-program", code="bad_notification")
        return notice

    def verified_callback(self, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
        """A notification's body with its resource decrypted, once its signature type, key id,
        freshness and signature are checked (any WeChat Pay notification: payments, transfers)."""
        found = notification_headers(headers)
        if found[SIGNATURE_TYPE_HEADER] != SIGNATURE_TYPE:
            raise NotAuthenticated("unsupported notification signature type", code="bad_signature")
        # Checked here: for an unknown serial the library would go and download platform certificates.
        if found[SERIAL_HEADER] != self._config.public_key_id:
            raise NotAuthenticated("the notification is signed with an unknown key", code="bad_signature")
        self._check_fresh(found[TIMESTAMP_HEADER])
        text = notification_text(body)
        try:
            data = self._client.callback(found, text)
        except Exception as exc:  # signed, but not the JSON/resource WeChat sends
            raise InvalidInput("the notification is malformed", code="bad_notification") from exc
        if not data:
            from wechatpayv3.utils import rsa_verify  # heavy: not at cold start

            if not rsa_verify(
                found[TIMESTAMP_HEADER], found[NONCE_HEADER], text, found[SIGNATURE_HEADER], self._public_key
            ):
                raise NotAuthenticated("the notification's signature does not verify", code="bad_signature")
            raise InvalidInput("the notification could not be decrypted", code="bad_notification")
        if not isinstance(data, dict):
            raise InvalidInput("the notification is malformed", code="bad_notification")
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
            raise NotAuthenticated("the notification timestamp is not a number", code="bad_signature")
        if abs(self._clock() - int(timestamp)) > NOTIFICATION_MAX_SKEW_SECONDS:
            raise NotAuthenticated("the notification is too old or from the future", code="stale_notification")

    def close(self, out_trade_no: str) -> None:
        """Close an unpaid order (关闭订单): it can no longer be paid. StateConflict `order_paid` if it was."""
        self._call(lambda: self._client.close(out_trade_no=out_trade_no))

    def query(self, out_trade_no: str) -> PaymentState | None:
        """The order as WeChat Pay knows it; None when it knows no such order (ORDER_NOT_EXIST)."""
        try:
            data = self._call(lambda: self._client.query(out_trade_no=out_trade_no))
        except UpstreamError as exc:
            if (exc.details or {}).get("wechatpay_code") in {"ORDER_NOT_EXIST", "ORDERNOTEXIST", "NOT_FOUND"}:
                return None
            raise
        return parse_payment_state(data, out_trade_no)

    def query_refund(self, out_refund_no: str) -> RefundResult | None:
        """A refund as WeChat Pay knows it; None when it knows no such refund (RESOURCE_NOT_EXISTS)."""
        try:
            data = self._call(lambda: self._client.query_refund(out_refund_no=out_refund_no))
        except UpstreamError as exc:
            if (exc.details or {}).get("wechatpay_code") in {"RESOURCE_NOT_EXISTS", "NOT_FOUND"}:
                return None
            raise
        return parse_refund_result(data, out_refund_no)

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
        return parse_refund_result(data, out_refund_no)
