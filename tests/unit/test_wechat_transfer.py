"""Merchant transfers: the live client against simulated WeChat answers, the sandbox twin and its faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from chalicelib.errors import InvalidInput, Missing, NotAuthenticated, StateConflict
from chalicelib.wechat.pay.keys import SandboxKeys, generate_sandbox_keys
from chalicelib.wechat.pay.live import LiveWeChatPay
from chalicelib.wechat.pay.protocol import PayConfig, wechat_signature_headers
from chalicelib.wechat.transfer import TransferBill, TransferRejected, TransferUnclear
from chalicelib.wechat.transfer.live import LiveTransfer
from chalicelib.wechat.transfer.protocol import bill_from
from chalicelib.wechat.transfer.sandbox import SandboxTransfer
from tests.unit.test_wechat_pay import wechat_answer

pytestmark = pytest.mark.unit

APPID = "wx0123456789abcdef"
NOTIFY_URL = f"https://api.example.com/v1/callbacks/wechatpay/{APPID}/transfer"
BILLS = "https://api.mch.weixin.qq.com/v3/fund-app/mch-transfer/transfer-bills"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
REPORT = [{"info_type": "岗位类型", "info_content": "推广员"}, {"info_type": "报酬说明", "info_content": "分销佣金"}]


@pytest.fixture(scope="module")
def keys() -> SandboxKeys:
    return generate_sandbox_keys()


@pytest.fixture(scope="module")
def config(keys: SandboxKeys) -> PayConfig:
    return keys.config(notify_url=NOTIFY_URL, appid=APPID)


@pytest.fixture(scope="module")
def live(config: PayConfig) -> LiveTransfer:
    return LiveTransfer(LiveWeChatPay(config), config, scene_id="1005", report_infos=REPORT)


@pytest.fixture
def sandbox(config: PayConfig, keys: SandboxKeys, tmp_path: Path) -> SandboxTransfer:
    return SandboxTransfer(config, keys.wechat_private_key_pem, tmp_path / "transfers.sqlite3")


def sent_json(body: bytes | str | None) -> Any:
    assert body is not None, "the request had no body"
    return json.loads(body)


def create(provider: Any, out_bill_no: str = "W0001test", amount: int = 1_000, **kwargs: Any) -> TransferBill:
    return provider.create_bill(out_bill_no=out_bill_no, openid=OPENID, amount_fen=amount, remark="佣金提现", **kwargs)


# --- live ------------------------------------------------------------------------------------


@responses.activate
def test_live_create_sends_the_bill_and_reads_wait_user_confirm(live: LiveTransfer, keys: SandboxKeys) -> None:
    answer = {
        "out_bill_no": "W0001test",
        "transfer_bill_no": "1330000071100999991182020050700019480001",
        "create_time": "2026-11-25T10:34:56+08:00",
        "state": "WAIT_USER_CONFIRM",
        "package_info": "affffddafdfafddffda==",
    }
    responses.post(BILLS, **wechat_answer(keys, answer))
    bill = create(live)
    assert bill == TransferBill(
        "W0001test", "WAIT_USER_CONFIRM", answer["transfer_bill_no"], answer["package_info"], None, None, None
    )
    sent = sent_json(responses.calls[0].request.body)
    assert sent == {
        "out_bill_no": "W0001test",
        "transfer_scene_id": "1005",
        "openid": OPENID,
        "transfer_amount": 1_000,
        "transfer_remark": "佣金提现",
        "transfer_scene_report_infos": REPORT,
        "appid": APPID,
        "notify_url": NOTIFY_URL,
    }
    assert responses.calls[0].request.headers["Authorization"].startswith("WECHATPAY2-SHA256-RSA2048 ")


@responses.activate
def test_live_create_encrypts_the_real_name_with_wechats_key(live: LiveTransfer, keys: SandboxKeys) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    responses.post(BILLS, **wechat_answer(keys, {"out_bill_no": "W0002test", "state": "ACCEPTED"}))
    create(live, "W0002test", 250_000, user_name="张三")
    request = responses.calls[0].request
    cipher = sent_json(request.body)["user_name"]
    assert cipher != "张三"
    assert request.headers["Wechatpay-Serial"] == keys.public_key_id
    private = load_pem_private_key(keys.wechat_private_key_pem.encode(), None)
    import base64

    plain = private.decrypt(  # type: ignore[union-attr]
        base64.b64decode(cipher),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 (WeChat: RSA-OAEP SHA-1)
    )
    assert plain.decode() == "张三"


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 500, "json": {"code": "SYSTEM_ERROR", "message": "系统错误"}},
        {"status": 429, "json": {"code": "FREQUENCY_LIMITED", "message": "频率超限"}},
        {"status": 400, "json": {"code": "SYSTEM_ERROR", "message": "系统繁忙"}},
        {"body": requests.exceptions.ReadTimeout("read timed out")},
        {"body": requests.exceptions.ConnectionError("refused")},
    ],
)
@responses.activate
def test_live_unclear_answers_say_query_first(live: LiveTransfer, reply: dict[str, Any]) -> None:
    responses.post(BILLS, **reply)
    with pytest.raises(TransferUnclear):
        create(live)


@responses.activate
def test_live_an_unsigned_success_is_unclear_not_trusted(live: LiveTransfer) -> None:
    responses.post(BILLS, json={"out_bill_no": "W0001test", "state": "SUCCESS"})
    with pytest.raises(TransferUnclear):
        create(live)


@pytest.mark.parametrize("code", ["PARAM_ERROR", "NOT_ENOUGH", "NO_AUTH", "INVALID_REQUEST"])
@responses.activate
def test_live_business_errors_are_rejections(live: LiveTransfer, code: str) -> None:
    responses.post(BILLS, status=400 if code != "NO_AUTH" else 403, json={"code": code, "message": "说明"})
    with pytest.raises(TransferRejected) as err:
        create(live)
    assert err.value.code == code


@responses.activate
def test_live_query_not_found_and_success(live: LiveTransfer, keys: SandboxKeys) -> None:
    url = f"{BILLS}/out-bill-no/W0001test"
    responses.get(url, status=404, json={"code": "NOT_FOUND", "message": "记录不存在"})
    assert live.query_bill("W0001test") is None
    responses.replace(
        responses.GET,
        url,
        **wechat_answer(
            keys,
            {
                "mch_id": keys.config(notify_url=NOTIFY_URL, appid=APPID).mchid,
                "out_bill_no": "W0001test",
                "transfer_bill_no": "1330000071100999991182020050700019480001",
                "appid": APPID,
                "state": "SUCCESS",
                "transfer_amount": 1000,
                "transfer_remark": "佣金提现",
                "openid": OPENID,
                "create_time": "2026-11-25T10:34:56+08:00",
                "update_time": "2026-11-25T10:40:00+08:00",
            },
        ),
    )
    bill = live.query_bill("W0001test")
    assert bill is not None and bill.state == "SUCCESS" and bill.final and bill.amount_fen == 1000


@responses.activate
def test_live_cancel(live: LiveTransfer, keys: SandboxKeys) -> None:
    answer = {"out_bill_no": "W0001test", "transfer_bill_no": "1330", "state": "CANCELING", "update_time": "x"}
    responses.post(f"{BILLS}/out-bill-no/W0001test/cancel", **wechat_answer(keys, answer))
    assert live.cancel_bill("W0001test").state == "CANCELING"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"out_bill_no": "W-01"}, "invalid_transfer"),
        ({"out_bill_no": "W" * 33}, "invalid_transfer"),
        ({"amount": 9}, "invalid_transfer"),
        ({"amount": 200_000}, "real_name_required"),
    ],
)
@responses.activate
def test_bills_wechat_would_refuse_are_never_sent(live: LiveTransfer, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        create(live, **kwargs)
    assert err.value.code == code
    assert len(responses.calls) == 0


# --- sandbox and callbacks -------------------------------------------------------------------


def test_sandbox_bill_waits_for_the_user_and_is_idempotent(sandbox: SandboxTransfer) -> None:
    bill = create(sandbox)
    assert bill.state == "WAIT_USER_CONFIRM" and bill.package_info and bill.transfer_bill_no
    assert create(sandbox) == bill  # the same out_bill_no is the same bill
    with pytest.raises(TransferRejected):
        create(sandbox, amount=2_000)  # ... and cannot become another
    queried = sandbox.query_bill("W0001test")  # WeChat's query answer: the amount and payee, no package
    assert queried == TransferBill("W0001test", bill.state, bill.transfer_bill_no, None, None, 1_000, OPENID)
    assert sandbox.query_bill("W0404test") is None


def test_user_confirmation_sends_a_callback_the_live_code_verifies(
    sandbox: SandboxTransfer, live: LiveTransfer
) -> None:
    create(sandbox)
    [(headers, body)] = sandbox.user_confirm("W0001test")
    bill = live.parse_notification(headers, body)
    assert (bill.out_bill_no, bill.state, bill.amount_fen, bill.openid) == ("W0001test", "SUCCESS", 1_000, OPENID)
    assert json.loads(body)["event_type"] == "MCHTRANSFER.BILL.FINISHED"
    with pytest.raises(StateConflict):
        sandbox.user_confirm("W0001test")
    with pytest.raises(Missing):
        sandbox.user_confirm("W0404test")


def test_forged_and_foreign_callbacks_are_refused(
    sandbox: SandboxTransfer, live: LiveTransfer, config: PayConfig, tmp_path: Path
) -> None:
    create(sandbox)
    headers, body = sandbox.notification_for("W0001test")
    with pytest.raises((NotAuthenticated, InvalidInput)):
        live.parse_notification(headers, body.replace(b"MCHTRANSFER", b"MCHTRANSFEX"))
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue_pem = rogue.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    forged = wechat_signature_headers(rogue_pem, config.public_key_id, body.decode())
    with pytest.raises(NotAuthenticated):
        live.parse_notification(forged, body)
    other_keys = generate_sandbox_keys()
    other = SandboxTransfer(
        other_keys.config(notify_url=NOTIFY_URL, appid=APPID), other_keys.wechat_private_key_pem, tmp_path / "o.db"
    )
    create(other)
    with pytest.raises(NotAuthenticated):
        live.parse_notification(*other.notification_for("W0001test"))


@pytest.mark.parametrize("fault", ["timeout_before_accept", "error_500", "reject"])
def test_faults_before_accepting_create_nothing(sandbox: SandboxTransfer, fault: str) -> None:
    sandbox.inject(fault, out_bill_no="W0001test")
    with pytest.raises(TransferRejected if fault == "reject" else TransferUnclear):
        create(sandbox)
    assert sandbox.query_bill("W0001test") is None
    assert create(sandbox).state == "WAIT_USER_CONFIRM"  # the fault fired once


def test_timeout_after_accepting_keeps_the_bill(sandbox: SandboxTransfer) -> None:
    sandbox.inject("timeout_after_accept")
    with pytest.raises(TransferUnclear):
        create(sandbox)
    found = sandbox.query_bill("W0001test")
    assert found is not None and found.state == "WAIT_USER_CONFIRM"


def test_succeed_fail_and_repeated_callbacks(sandbox: SandboxTransfer) -> None:
    sandbox.inject("succeed", out_bill_no="W0001succ")
    assert create(sandbox, "W0001succ").state == "SUCCESS"
    sandbox.inject("fail", out_bill_no="W0002fail")
    failed = create(sandbox, "W0002fail")
    assert failed.state == "FAIL" and failed.fail_reason
    create(sandbox, "W0003late")
    sandbox.inject("fail", out_bill_no="W0003late")
    sandbox.inject("repeat_callbacks", times=3, out_bill_no="W0003late")
    notes = sandbox.user_confirm("W0003late")
    assert len(notes) == 3
    assert sandbox.query_bill("W0003late").state == "FAIL"  # type: ignore[union-attr]


def test_query_delay_answers_the_previous_state_for_a_while(
    config: PayConfig, keys: SandboxKeys, tmp_path: Path
) -> None:
    now = [1_000.0]
    sandbox = SandboxTransfer(config, keys.wechat_private_key_pem, tmp_path / "t.db", clock=lambda: now[0])
    create(sandbox)
    sandbox.inject("query_delay", times=5, seconds=30)
    sandbox.user_confirm("W0001test")
    assert sandbox.query_bill("W0001test").state == "WAIT_USER_CONFIRM"  # type: ignore[union-attr]
    now[0] += 31
    assert sandbox.query_bill("W0001test").state == "SUCCESS"  # type: ignore[union-attr]


def test_two_processes_share_bills_and_faults(config: PayConfig, keys: SandboxKeys, tmp_path: Path) -> None:
    api = SandboxTransfer(config, keys.wechat_private_key_pem, tmp_path / "shared.db")
    worker = SandboxTransfer(config, keys.wechat_private_key_pem, tmp_path / "shared.db")
    api.inject("error_500")
    with pytest.raises(TransferUnclear):
        create(worker)
    create(worker)
    api.user_confirm("W0001test")
    assert worker.query_bill("W0001test").state == "SUCCESS"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown fault"):
        api.inject("explode")


# --- contract: the twin answers like WeChat's documented samples -----------------------------

# WeChat Pay's documented sample answers (商家转账: 发起转账, 商户单号查询转账单), field for field.
DOCUMENTED_CREATE_ANSWER = {
    "out_bill_no": "plfk2020042013",
    "transfer_bill_no": "1330000071100999991182020050700019480001",
    "create_time": "2015-05-20T13:29:35.120+08:00",
    "state": "ACCEPTED",
    "package_info": "affffddafdfafddffda==",
}
DOCUMENTED_QUERY_ANSWER = {
    "mch_id": "1900001109",
    "out_bill_no": "plfk2020042013",
    "transfer_bill_no": "1330000071100999991182020050700019480001",
    "appid": "wxf636efh567hg4356",
    "state": "ACCEPTED",
    "transfer_amount": 400000,
    "transfer_remark": "2020年4月报销",
    "fail_reason": "PAYEE_ACCOUNT_ABNORMAL",
    "openid": "o-MYE42l80oelYMDE34nYD456Xoy",
    "user_name": "757b340b45ebef5467rter35gf464344v3542sdf4t6re4tb4f54ty45t4yyry45",
    "create_time": "2015-05-20T13:29:35.120+08:00",
    "update_time": "2015-05-20T13:29:35.120+08:00",
}


def test_documented_answers_read_as_bills_and_only_the_create_answer_has_a_package() -> None:
    created = bill_from(DOCUMENTED_CREATE_ANSWER, "plfk2020042013")
    assert created.package_info == "affffddafdfafddffda==" and created.amount_fen is None
    queried = bill_from(DOCUMENTED_QUERY_ANSWER, "plfk2020042013")
    assert queried.package_info is None
    assert (queried.amount_fen, queried.openid, queried.fail_reason) == (
        400000,
        "o-MYE42l80oelYMDE34nYD456Xoy",
        "PAYEE_ACCOUNT_ABNORMAL",
    )


def test_the_twins_answers_have_wechats_documented_fields(sandbox: SandboxTransfer) -> None:
    """The twin builds the JSON WeChat would send: a create answer (with package_info while the
    user must confirm), a query answer (never package_info), each within the documented fields."""
    created = create(sandbox)
    assert created.package_info  # the create answer carries it
    answer = sandbox.query_answer("W0001test")
    assert answer is not None
    assert "package_info" not in answer
    assert set(answer) <= set(DOCUMENTED_QUERY_ANSWER)
    assert {"mch_id", "out_bill_no", "transfer_bill_no", "appid", "state", "transfer_amount", "openid"} <= set(answer)
    assert set(sandbox.create_answer("W0001test")) <= set(DOCUMENTED_CREATE_ANSWER) | {"fail_reason"}
    queried = sandbox.query_bill("W0001test")
    assert queried is not None and queried.state == "WAIT_USER_CONFIRM"
    assert queried.package_info is None  # like WeChat: only the create answer has it
    assert (queried.amount_fen, queried.openid) == (1_000, OPENID)


def test_a_repeated_create_answers_like_the_first_with_its_package(sandbox: SandboxTransfer) -> None:
    first = create(sandbox)
    again = create(sandbox)
    assert again.package_info == first.package_info and again.transfer_bill_no == first.transfer_bill_no


# --- callbacks: mch_id or mchid ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["mch_id", "mchid"])
def test_the_callbacks_merchant_id_may_be_mch_id_or_mchid(
    sandbox: SandboxTransfer, live: LiveTransfer, config: PayConfig, key: str
) -> None:
    resource = {
        "out_bill_no": "W0001test",
        "transfer_bill_no": "1330000071100999991182020050700019480001",
        "state": "SUCCESS",
        key: config.mchid,
        "transfer_amount": 1_000,
        "openid": OPENID,
        "create_time": "2026-11-25T10:34:56+08:00",
        "update_time": "2026-11-25T10:40:00+08:00",
    }
    headers, body = sandbox._pay.notification(
        "MCHTRANSFER.BILL.FINISHED", "商家转账单据终态通知", "mch_payment", resource
    )
    bill = live.parse_notification(headers, body)
    assert (bill.out_bill_no, bill.state, bill.amount_fen) == ("W0001test", "SUCCESS", 1_000)


@pytest.mark.parametrize("resource_ids", [{"mchid": "1900000000"}, {"mch_id": "1900000000"}, {}])
def test_a_callback_for_another_or_no_merchant_is_refused(
    sandbox: SandboxTransfer, live: LiveTransfer, resource_ids: dict[str, str]
) -> None:
    resource = {"out_bill_no": "W0001test", "state": "SUCCESS", **resource_ids}
    headers, body = sandbox._pay.notification(
        "MCHTRANSFER.BILL.FINISHED", "商家转账单据终态通知", "mch_payment", resource
    )
    with pytest.raises(InvalidInput):
        live.parse_notification(headers, body)
