"""The real merchant-transfer API through `wechatpayv3`: `mch_transfer_bills`,
`mch_transfer_bills_query` and `mch_transfer_bills_cancel` (`/v3/fund-app/mch-transfer/transfer-bills`),
sharing the merchant client and the notification verification of `LiveWeChatPay` (public-key mode:
no start-up call).

Notes on wechatpayv3 2.0.4:
- `mch_transfer_bills(out_bill_no, transfer_scene_id, openid, transfer_amount, transfer_remark,
  user_name=None, user_recv_perception=None, transfer_scene_report_infos=[], appid=None,
  notify_url=None)` encrypts `user_name` with the WeChat Pay public key itself (and sends the
  key id as `Wechatpay-Serial`); it raises a bare Exception for an amount ≥ 2,000 yuan without
  a name, so that is checked here first.
- Every call returns `(status, text)` for any status and raises a bare Exception when a 2xx
  answer's signature does not verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.errors import InvalidInput
from chalicelib.wechat.pay.live import LiveWeChatPay
from chalicelib.wechat.pay.protocol import PayConfig
from chalicelib.wechat.transfer.protocol import (
    NOTIFICATION_EVENT,
    UNCLEAR_CODES,
    TransferBill,
    TransferRejected,
    TransferUnclear,
    bill_from,
    check_bill,
)


class LiveTransfer:
    """The real transfer API through `wechatpayv3`, sharing `LiveWeChatPay`'s client and checks."""

    def __init__(self, pay: LiveWeChatPay, config: PayConfig, *, scene_id: str, report_infos: list[dict[str, str]]):
        self._pay = pay
        self._config = config
        self._scene_id = scene_id
        self._report_infos = [dict(info) for info in report_infos]
        self.mch_id = config.mchid
        self.appid = config.appid

    def _call(self, request: Callable[[], Any], *, not_found_is_none: bool = False) -> dict[str, Any] | None:
        import requests  # heavy: not at the Lambda's cold start

        try:
            status, text = request()
        except requests.RequestException as exc:
            raise TransferUnclear(f"WeChat Pay is unreachable: {exc}") from exc
        except Exception as exc:  # an answer whose signature does not verify: trust nothing, query later
            raise TransferUnclear(f"WeChat Pay answer refused: {exc}") from exc
        status = int(status)
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = None
        if status >= 500 or status == 429 or not isinstance(data, dict):
            raise TransferUnclear(f"WeChat Pay answered HTTP {status}")
        if 200 <= status < 300:
            return data
        code, message = str(data.get("code", "")), str(data.get("message", ""))
        if code in UNCLEAR_CODES:
            raise TransferUnclear(f"WeChat Pay answered {code}: {message}")
        if not_found_is_none and (status == 404 or code == "NOT_FOUND"):
            return None
        raise TransferRejected(code or f"HTTP_{status}", message)

    def create_bill(
        self, *, out_bill_no: str, openid: str, amount_fen: int, remark: str, user_name: str | None = None
    ) -> TransferBill:
        check_bill(out_bill_no, openid, amount_fen, remark, user_name)
        client = self._pay.client
        data = self._call(
            lambda: client.mch_transfer_bills(
                out_bill_no=out_bill_no,
                transfer_scene_id=self._scene_id,
                openid=openid,
                transfer_amount=amount_fen,
                transfer_remark=remark,
                user_name=user_name,
                transfer_scene_report_infos=self._report_infos,
                notify_url=self._config.notify_url,
            )
        )
        return bill_from(data or {}, out_bill_no)

    def query_bill(self, out_bill_no: str) -> TransferBill | None:
        client = self._pay.client
        data = self._call(lambda: client.mch_transfer_bills_query(out_bill_no=out_bill_no), not_found_is_none=True)
        return None if data is None else bill_from(data, out_bill_no)

    def cancel_bill(self, out_bill_no: str) -> TransferBill:
        client = self._pay.client
        data = self._call(lambda: client.mch_transfer_bills_cancel(out_bill_no))
        return bill_from(data or {}, out_bill_no)

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> TransferBill:
        data = self._pay.verified_callback(headers, body)
        try:
            resource = data["resource"]
            if data.get("event_type") != NOTIFICATION_EVENT or not isinstance(resource, dict):
                raise InvalidInput("not a transfer notification", code="bad_notification")
            # WeChat names the merchant `mch_id` in this resource, `mchid` in others: accept either
            if (resource.get("mch_id") or resource.get("mchid")) != self.mch_id:
                raise InvalidInput("the notification is for another merchant", code="bad_notification")
            return bill_from(resource)
        except (KeyError, TypeError, TransferUnclear) as exc:
            raise InvalidInput("the notification lacks expected fields", code="bad_notification") from exc
