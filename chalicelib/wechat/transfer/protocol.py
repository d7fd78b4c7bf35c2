"""WeChat merchant transfers (商家转账), the protocol both clients speak: one bill per withdrawal,
its states, WeChat's own limits checked before any call, and its answers read into a `TransferBill`
(or written, by the sandbox twin, the way WeChat writes them).

A transfer either happened, was refused for good (`TransferRejected`), or is unknown until the bill
is queried (`TransferUnclear`): callers never retry a bill they have not queried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.errors import InvalidInput

TRANSFER_STATES = (
    "ACCEPTED",
    "PROCESSING",
    "WAIT_USER_CONFIRM",
    "TRANSFERING",
    "SUCCESS",
    "FAIL",
    "CANCELING",
    "CANCELLED",
)
FINAL_STATES = frozenset({"SUCCESS", "FAIL", "CANCELLED"})
REAL_NAME_FROM_FEN = 200_000  # WeChat requires the (encrypted) user_name from 2,000 yuan
MIN_TRANSFER_FEN = 10  # 0.1 yuan
NOTIFICATION_EVENT = "MCHTRANSFER.BILL.FINISHED"
RESOURCE_TYPE = "mch_payment"
UNCLEAR_CODES = frozenset({"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED"})
_OUT_BILL_NO = re.compile(r"[0-9A-Za-z]{5,32}")


@dataclass(frozen=True, slots=True)
class TransferBill:
    out_bill_no: str
    state: str
    transfer_bill_no: str | None = None
    package_info: str | None = None  # while WAIT_USER_CONFIRM: what wx.requestMerchantTransfer needs
    fail_reason: str | None = None
    amount_fen: int | None = None
    openid: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class TransferUnclear(Exception):
    """Timeout, connection error, HTTP 5xx or SYSTEM_ERROR/FREQUENCY_LIMITED: the bill may or may not
    exist at WeChat. Callers must query the bill before any retry."""


class TransferRejected(Exception):
    """WeChat refused the request for good (PARAM_ERROR, INVALID_REQUEST, NOT_ENOUGH, NO_AUTH, ...):
    no bill was created."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransferProvider(Protocol):
    mch_id: str
    appid: str

    def create_bill(
        self, *, out_bill_no: str, openid: str, amount_fen: int, remark: str, user_name: str | None = None
    ) -> TransferBill: ...

    def query_bill(self, out_bill_no: str) -> TransferBill | None: ...

    def cancel_bill(self, out_bill_no: str) -> TransferBill: ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes | str) -> TransferBill: ...


def check_bill(out_bill_no: str, openid: str, amount_fen: int, remark: str, user_name: str | None) -> None:
    """WeChat's own limits on a transfer bill, checked before calling it."""
    if not _OUT_BILL_NO.fullmatch(out_bill_no):
        raise InvalidInput("out_bill_no must be 5-32 letters or digits", code="invalid_transfer")
    if not openid:
        raise InvalidInput("the payee has no openid", code="invalid_transfer")
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen < MIN_TRANSFER_FEN:
        raise InvalidInput("a transfer is at least 0.1 yuan", code="invalid_transfer")
    if not 1 <= len(remark) <= 32:
        raise InvalidInput("the transfer remark must be 1-32 characters", code="invalid_transfer")
    if amount_fen >= REAL_NAME_FROM_FEN and not user_name:
        raise InvalidInput("transfers of 2,000 yuan or more need the payee's real name", code="real_name_required")


def bill_from(data: Mapping[str, Any], out_bill_no: str | None = None) -> TransferBill:
    """A bill from WeChat's answer or callback resource (state checked, the rest optional)."""
    state = data.get("state")
    number = data.get("out_bill_no") or out_bill_no
    if state not in TRANSFER_STATES or not isinstance(number, str) or (out_bill_no and number != out_bill_no):
        raise TransferUnclear(f"WeChat answered the transfer with something unexpected: {dict(data)!r:.200}")
    amount = data.get("transfer_amount")
    return TransferBill(
        out_bill_no=number,
        state=str(state),
        transfer_bill_no=_optional(data.get("transfer_bill_no")),
        package_info=_optional(data.get("package_info")),
        fail_reason=_optional(data.get("fail_reason")),
        amount_fen=int(amount) if isinstance(amount, int) and not isinstance(amount, bool) else None,
        openid=_optional(data.get("openid")),
    )


def _optional(value: Any) -> str | None:
    return str(value) if value else None


def _china_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(epoch + 8 * 3600))


def create_answer(bill: TransferBill, created_at: float) -> dict[str, Any]:
    """WeChat's answer to 发起转账 (documented fields: out_bill_no, transfer_bill_no, create_time,
    state, fail_reason, package_info). It alone carries package_info, while the user must confirm."""
    answer: dict[str, Any] = {
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "create_time": _china_time(created_at),
        "state": bill.state,
    }
    if bill.fail_reason:
        answer["fail_reason"] = bill.fail_reason
    if bill.state == "WAIT_USER_CONFIRM" and bill.package_info:
        answer["package_info"] = bill.package_info
    return answer


def query_answer(bill: TransferBill, mch_id: str, appid: str, created_at: float, updated_at: float) -> dict[str, Any]:
    """WeChat's answer to 商户单号查询转账单 (documented fields: mch_id, out_bill_no, transfer_bill_no,
    appid, state, transfer_amount, transfer_remark, fail_reason, openid, user_name, create_time,
    update_time): no package_info, whatever the state. The twin keeps no remark or name, so it
    leaves those two out."""
    answer: dict[str, Any] = {
        "mch_id": mch_id,
        "out_bill_no": bill.out_bill_no,
        "transfer_bill_no": bill.transfer_bill_no,
        "appid": appid,
        "state": bill.state,
        "transfer_amount": bill.amount_fen,
        "openid": bill.openid,
        "create_time": _china_time(created_at),
        "update_time": _china_time(updated_at),
    }
    if bill.fail_reason:
        answer["fail_reason"] = bill.fail_reason
    return answer
