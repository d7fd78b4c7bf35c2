"""WeChat Pay: the live client against recorded answers, the sandbox twin through the live verification."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_public_key
from responses import matchers

from chalicelib.errors import InvalidInput, NotAuthenticated, StateConflict, UpstreamError
from chalicelib.wechat.pay import keys as sandbox_keys
from chalicelib.wechat.pay import protocol
from chalicelib.wechat.pay.keys import SandboxKeys, generate_sandbox_keys, load_or_create_sandbox_keys, sandbox_config
from chalicelib.wechat.pay.live import LiveWeChatPay
from chalicelib.wechat.pay.protocol import PayConfig, PaymentNotice, wechat_signature_headers
from chalicelib.wechat.pay.sandbox import SandboxWeChatPay

APPID = "wx0123456789abcdef"
NOTIFY_URL = "https://api.example.com/v1/callbacks/wechatpay/wx0123456789abcdef/payment"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
GATEWAY = "https://api.mch.weixin.qq.com"
JSAPI_URL = f"{GATEWAY}/v3/pay/transactions/jsapi"
REFUND_URL = f"{GATEWAY}/v3/refund/domestic/refunds"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
HEADERS = (
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)


@pytest.fixture(scope="module")
def keys() -> SandboxKeys:
    return generate_sandbox_keys()


@pytest.fixture(scope="module")
def rogue_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


@pytest.fixture(scope="module")
def config(keys: SandboxKeys) -> PayConfig:
    return keys.config(notify_url=NOTIFY_URL, appid=APPID)


@pytest.fixture(scope="module")
def live(config: PayConfig) -> LiveWeChatPay:
    return LiveWeChatPay(config)


@pytest.fixture(scope="module")
def sandbox(config: PayConfig, keys: SandboxKeys, tmp_path_factory: Any) -> Iterator[SandboxWeChatPay]:
    from chalicelib.wechat import outbox

    outbox.set_transport(lambda url, headers, body: 200)  # WeChat's POSTs land nowhere in unit tests
    try:
        yield SandboxWeChatPay(
            config, keys.wechat_private_key_pem, db_path=tmp_path_factory.mktemp("twin") / "payments.sqlite3"
        )
    finally:
        outbox.set_transport(None)


def verify_rsa(public_pem: str, message: str, signature: str) -> None:
    """Raises InvalidSignature unless `signature` is RSA-SHA256 of `message` by the key's private half."""
    key = load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(base64.b64decode(signature), message.encode(), PKCS1v15(), SHA256())


def wechat_answer(keys: SandboxKeys, payload: dict[str, Any], status: int = 200, signer: str | None = None) -> Any:
    """A WeChat Pay answer, signed like WeChat signs them (by the WeChat-side key unless `signer`)."""
    body = json.dumps(payload)
    pem = signer or keys.wechat_private_key_pem
    headers = wechat_signature_headers(pem, keys.public_key_id, body)
    return {"status": status, "body": body, "content_type": "application/json", "headers": headers}


def check_prepay_params(prepay: protocol.Prepay, config: PayConfig, merchant_public_pem: str) -> None:
    assert prepay.app_id == APPID
    assert prepay.sign_type == "RSA"
    assert prepay.time_stamp.isdigit() and abs(int(prepay.time_stamp) - time.time()) < 60
    assert re.fullmatch(r"[0-9a-f]{32}", prepay.nonce_str)
    message = f"{prepay.app_id}\n{prepay.time_stamp}\n{prepay.nonce_str}\n{prepay.package}\n"
    verify_rsa(merchant_public_pem, message, prepay.pay_sign)
    assert prepay.js_params() == {
        "timeStamp": prepay.time_stamp,
        "nonceStr": prepay.nonce_str,
        "package": prepay.package,
        "signType": "RSA",
        "paySign": prepay.pay_sign,
    }


# --- prepay -------------------------------------------------------------------------------------


@responses.activate
def test_live_prepay_sends_the_order_and_signs_the_payment_parameters(
    live: LiveWeChatPay, config: PayConfig, keys: SandboxKeys
) -> None:
    # Given WeChat Pay accepts the order
    expected = {
        "appid": APPID,
        "mchid": config.mchid,
        "description": "测试商品",
        "out_trade_no": "T20250101000001",
        "notify_url": NOTIFY_URL,
        "amount": {"total": 1234, "currency": "CNY"},
        "payer": {"openid": OPENID},
        "time_expire": "2030-01-01T08:00:00+08:00",  # RFC 3339, China time: unpayable after it
    }
    responses.post(
        JSAPI_URL,
        match=[matchers.json_params_matcher(expected)],
        **wechat_answer(keys, {"prepay_id": "wx201410272009395522657a690389285100"}),
    )
    # When the buyer pays
    prepay = live.jsapi_prepay(
        out_trade_no="T20250101000001",
        description="测试商品",
        amount_fen=1234,
        payer_openid=OPENID,
        time_expire=EXPIRES,
    )
    # Then the mini-program gets parameters signed by the merchant key
    assert prepay.package == "prepay_id=wx201410272009395522657a690389285100"
    check_prepay_params(prepay, config, keys.merchant_public_key_pem)


@responses.activate
def test_live_requests_carry_a_valid_merchant_authorization(
    live: LiveWeChatPay, config: PayConfig, keys: SandboxKeys
) -> None:
    responses.post(JSAPI_URL, **wechat_answer(keys, {"prepay_id": "wx1"}))
    live.jsapi_prepay(
        out_trade_no="T20250101000002", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
    )

    request = responses.calls[0].request
    scheme, _, params = request.headers["Authorization"].partition(" ")
    assert scheme == "WECHATPAY2-SHA256-RSA2048"
    fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
    assert fields["mchid"] == config.mchid
    assert fields["serial_no"] == config.cert_serial_no
    assert request.headers["Wechatpay-Serial"] == config.public_key_id
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    message = f"POST\n/v3/pay/transactions/jsapi\n{fields['timestamp']}\n{fields['nonce_str']}\n{body}\n"
    verify_rsa(keys.merchant_public_key_pem, message, fields["signature"])


def test_sandbox_prepay_is_signed_exactly_like_live(
    sandbox: SandboxWeChatPay, config: PayConfig, keys: SandboxKeys
) -> None:
    prepay = sandbox.jsapi_prepay(
        out_trade_no="T20250101000003", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
    )
    assert re.fullmatch(r"prepay_id=sbx_[0-9a-f]{28}", prepay.package)
    check_prepay_params(prepay, config, keys.merchant_public_key_pem)
    again = sandbox.jsapi_prepay(
        out_trade_no="T20250101000003", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
    )
    assert again.package == prepay.package  # like WeChat: the same order gets the same prepay id


@pytest.mark.parametrize(
    "order",
    [
        {"out_trade_no": "T1"},
        {"out_trade_no": "T2025 0101"},
        {"amount_fen": 0},
        {"amount_fen": True},
        {"description": ""},
        {"description": "x" * 128},
        {"payer_openid": ""},
    ],
)
@responses.activate
def test_orders_wechat_would_refuse_are_bad_requests(
    live: LiveWeChatPay, sandbox: SandboxWeChatPay, order: dict[str, Any]
) -> None:
    args = {"out_trade_no": "T20250101000004", "description": "x", "amount_fen": 100, "payer_openid": OPENID, **order}
    for client in (live, sandbox):
        with pytest.raises(InvalidInput) as raised:
            client.jsapi_prepay(**args, time_expire=EXPIRES)
        assert raised.value.code == "invalid_payment"
    assert len(responses.calls) == 0


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 500, "body": "<html>oops</html>", "content_type": "text/html"},
        {"status": 503, "json": {"code": "SYSTEM_ERROR", "message": "系统错误"}},
        {"status": 429, "json": {"code": "FREQUENCY_LIMITED", "message": "频率超限"}},
        {"body": requests.exceptions.ConnectTimeout("timed out")},
        {"body": requests.exceptions.ConnectionError("reset")},
    ],
)
@responses.activate
def test_prepay_outages_are_upstream_unavailable(live: LiveWeChatPay, reply: dict[str, Any]) -> None:
    responses.post(JSAPI_URL, **reply)
    with pytest.raises(UpstreamError) as raised:
        live.jsapi_prepay(
            out_trade_no="T20250101000005", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
        )
    assert raised.value.code == "wechatpay_unavailable"
    assert raised.value.status == 502


@pytest.mark.parametrize(
    ("status", "code", "error", "domain_code"),
    [
        (400, "ORDERPAID", StateConflict, "order_paid"),
        (400, "ORDER_CLOSED", StateConflict, "order_closed"),
        (400, "PARAM_ERROR", UpstreamError, "wechatpay_error"),
        (403, "NO_AUTH", UpstreamError, "wechatpay_error"),
        (401, "SIGN_ERROR", UpstreamError, "wechatpay_error"),
    ],
)
@responses.activate
def test_prepay_business_errors_name_wechats_code(
    live: LiveWeChatPay, status: int, code: str, error: type[Exception], domain_code: str
) -> None:
    responses.post(JSAPI_URL, status=status, json={"code": code, "message": "说明"})
    with pytest.raises(error) as raised:
        live.jsapi_prepay(
            out_trade_no="T20250101000006", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
        )
    assert raised.value.code == domain_code  # type: ignore[attr-defined]
    assert code in str(raised.value)
    assert raised.value.details == {"wechatpay_code": code}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [
        "forged",  # signed by someone else
        "unsigned",
        "no_prepay_id",
        "not_json",
    ],
)
@responses.activate
def test_prepay_answers_that_cannot_be_trusted_or_used_are_upstream_errors(
    live: LiveWeChatPay, keys: SandboxKeys, rogue_pem: str, answer: str
) -> None:
    if answer == "forged":
        responses.post(JSAPI_URL, **wechat_answer(keys, {"prepay_id": "wx1"}, signer=rogue_pem))
    elif answer == "unsigned":
        responses.post(JSAPI_URL, json={"prepay_id": "wx1"})
    elif answer == "no_prepay_id":
        responses.post(JSAPI_URL, **wechat_answer(keys, {"hello": "world"}))
    else:
        responses.post(JSAPI_URL, status=400, body="nope", content_type="text/plain")
    with pytest.raises(UpstreamError) as raised:
        live.jsapi_prepay(
            out_trade_no="T20250101000007", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
        )
    assert raised.value.code == "wechatpay_error"


# --- notifications ------------------------------------------------------------------------------


def test_a_sandbox_notification_parses_through_the_live_verification(
    sandbox: SandboxWeChatPay, config: PayConfig
) -> None:
    # Given WeChat (the sandbox) notifies a payment
    headers, body = sandbox.notification_for("T20250101000008", 4321, OPENID)
    # When the live client and the sandbox parse it
    notice = LiveWeChatPay(config).parse_notification(headers, body)
    # Then both read the same verified payment
    assert notice == sandbox.parse_notification(headers, body)
    assert (notice.out_trade_no, notice.trade_state, notice.amount_fen, notice.payer_openid) == (
        "T20250101000008",
        "SUCCESS",
        4321,
        OPENID,
    )
    assert notice.transaction_id.startswith("sbx_tx_")
    assert notice.success_time is not None and notice.success_time.endswith("+08:00")
    assert notice.event_id and notice.event_type == "TRANSACTION.SUCCESS" and not notice.is_refund


def test_the_notification_has_wechats_shape(sandbox: SandboxWeChatPay, config: PayConfig) -> None:
    headers, body = sandbox.notification_for("T20250101000009", 100, OPENID)
    assert set(headers) == set(HEADERS)
    assert headers["Wechatpay-Serial"] == config.public_key_id
    assert headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    data = json.loads(body)
    assert set(data) == {"id", "create_time", "resource_type", "event_type", "summary", "resource"}
    assert (data["event_type"], data["resource_type"]) == ("TRANSACTION.SUCCESS", "encrypt-resource")
    resource = data["resource"]
    assert resource["algorithm"] == "AEAD_AES_256_GCM"
    assert resource["associated_data"] == resource["original_type"] == "transaction"
    assert len(resource["nonce"]) == 12
    base64.b64decode(resource["ciphertext"], validate=True)
    verify_rsa(
        config.public_key_pem,
        f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n{body.decode()}\n",
        headers["Wechatpay-Signature"],
    )


def test_headers_in_any_case_and_a_text_body_are_accepted(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.notification_for("T20250101000010", 100, OPENID, trade_state="CLOSED")
    notice = live.parse_notification({k.lower(): v for k, v in headers.items()}, body.decode())
    assert (notice.trade_state, notice.success_time) == ("CLOSED", None)


def test_a_refund_notification_at_the_same_url_is_understood(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.refund_notification_for("T20250101000011", "R20250101000011", 300, 1000)
    notice = live.parse_notification(headers, body)
    assert notice.is_refund
    assert (notice.event_type, notice.trade_state, notice.out_refund_no, notice.amount_fen) == (
        "REFUND.SUCCESS",
        "SUCCESS",
        "R20250101000011",
        300,
    )


def test_a_tampered_body_is_refused(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.notification_for("T20250101000012", 100, OPENID)
    tampered = body.replace(b'"summary":"', b'"summary":"x')
    assert tampered != body
    with pytest.raises(NotAuthenticated) as raised:
        live.parse_notification(headers, tampered)
    assert raised.value.code == "bad_signature"


@pytest.mark.parametrize("how", ["other_key", "garbage", "other_timestamp"])
def test_a_wrong_signature_is_refused(
    sandbox: SandboxWeChatPay, live: LiveWeChatPay, config: PayConfig, rogue_pem: str, how: str
) -> None:
    headers, body = sandbox.notification_for("T20250101000013", 100, OPENID)
    if how == "other_key":
        headers = wechat_signature_headers(rogue_pem, config.public_key_id, body.decode())
    elif how == "garbage":
        headers["Wechatpay-Signature"] = base64.b64encode(b"\0" * 256).decode()
    else:
        headers["Wechatpay-Timestamp"] = str(int(headers["Wechatpay-Timestamp"]) - 1)
    with pytest.raises(NotAuthenticated) as raised:
        live.parse_notification(headers, body)
    assert raised.value.code == "bad_signature"


@pytest.mark.parametrize("serial", ["PUB_KEY_ID_0000000000", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", "zz"])
@responses.activate
def test_an_unknown_serial_is_refused_without_fetching_certificates(
    sandbox: SandboxWeChatPay, live: LiveWeChatPay, serial: str
) -> None:
    headers, body = sandbox.notification_for("T20250101000014", 100, OPENID)
    with pytest.raises(NotAuthenticated) as raised:
        live.parse_notification({**headers, "Wechatpay-Serial": serial}, body)
    assert raised.value.code == "bad_signature"
    assert len(responses.calls) == 0


@pytest.mark.parametrize("missing", HEADERS)
def test_a_missing_header_is_refused(sandbox: SandboxWeChatPay, live: LiveWeChatPay, missing: str) -> None:
    headers, body = sandbox.notification_for("T20250101000015", 100, OPENID)
    del headers[missing]
    with pytest.raises(NotAuthenticated) as raised:
        live.parse_notification(headers, body)
    assert raised.value.code == "bad_signature"


def test_another_signature_type_is_refused(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.notification_for("T20250101000016", 100, OPENID)
    with pytest.raises(NotAuthenticated):
        live.parse_notification({**headers, "Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}, body)


@pytest.mark.parametrize(("age", "accepted"), [(600, False), (-600, False), (301, False), (240, True), (-240, True)])
def test_stale_or_future_notifications_are_refused(
    sandbox: SandboxWeChatPay, live: LiveWeChatPay, age: int, accepted: bool
) -> None:
    # Given a correctly signed notification stamped `age` seconds ago
    headers, body = sandbox.notification_for("T20250101000017", 100, OPENID, timestamp=int(time.time()) - age)
    if accepted:
        assert live.parse_notification(headers, body).amount_fen == 100
        return
    with pytest.raises(NotAuthenticated) as raised:
        live.parse_notification(headers, body)
    assert raised.value.code == "stale_notification"


def test_a_timestamp_that_is_not_a_number_is_refused(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.notification_for("T20250101000018", 100, OPENID)
    with pytest.raises(NotAuthenticated):
        live.parse_notification({**headers, "Wechatpay-Timestamp": "1e9"}, body)
    with pytest.raises(NotAuthenticated):
        live.parse_notification({**headers, "Wechatpay-Timestamp": "²"}, body)


def test_a_notification_under_another_apiv3_key_cannot_be_decrypted(
    sandbox: SandboxWeChatPay, config: PayConfig
) -> None:
    headers, body = sandbox.notification_for("T20250101000019", 100, OPENID)
    other = LiveWeChatPay(dataclasses.replace(config, apiv3_key="0" * 32))
    with pytest.raises(InvalidInput) as raised:
        other.parse_notification(headers, body)
    assert raised.value.code == "bad_notification"


def test_a_notification_for_another_mini_program_is_refused(
    config: PayConfig, keys: SandboxKeys, live: LiveWeChatPay
) -> None:
    elsewhere = SandboxWeChatPay(dataclasses.replace(config, appid="wxother"), keys.wechat_private_key_pem)
    headers, body = elsewhere.notification_for("T20250101000020", 100, OPENID)
    with pytest.raises(InvalidInput):
        live.parse_notification(headers, body)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"id": "1", "resource_type": "plain", "event_type": "TRANSACTION.SUCCESS"}),
        json.dumps({"id": "1", "resource_type": "encrypt-resource", "resource": {"algorithm": "AES_128_CBC"}}),
        json.dumps([1, 2]),
    ],
)
def test_signed_but_malformed_notifications_are_bad_requests(keys: SandboxKeys, live: LiveWeChatPay, body: str) -> None:
    headers = wechat_signature_headers(keys.wechat_private_key_pem, keys.public_key_id, body)
    with pytest.raises(InvalidInput) as raised:
        live.parse_notification(headers, body.encode())
    assert raised.value.code == "bad_notification"


def test_a_decrypted_resource_without_the_expected_fields_is_a_bad_request(
    sandbox: SandboxWeChatPay, live: LiveWeChatPay, config: PayConfig
) -> None:
    headers, body = sandbox._notification(
        "TRANSACTION.SUCCESS", "支付成功", "transaction", {"mchid": config.mchid}, time.time()
    )
    with pytest.raises(InvalidInput):
        live.parse_notification(headers, body)


def test_a_body_that_is_not_utf8_is_a_bad_request(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, _ = sandbox.notification_for("T20250101000021", 100, OPENID)
    with pytest.raises(InvalidInput):
        live.parse_notification(headers, b"\xff\xfe")


# --- refunds ------------------------------------------------------------------------------------


@responses.activate
def test_live_refund_maps_wechats_answer(live: LiveWeChatPay, keys: SandboxKeys) -> None:
    # Given WeChat accepts the refund (its documented answer shape)
    expected = {
        "notify_url": NOTIFY_URL,
        "out_refund_no": "R20250101000022",
        "out_trade_no": "T20250101000022",
        "amount": {"refund": 300, "total": 1000, "currency": "CNY"},
        "reason": "买家取消",
    }
    answer = {
        "refund_id": "50000000382019052709732678859",
        "out_refund_no": "R20250101000022",
        "transaction_id": "1217752501201407033233368018",
        "out_trade_no": "T20250101000022",
        "channel": "ORIGINAL",
        "user_received_account": "招商银行信用卡0403",
        "success_time": "2025-01-01T10:34:56+08:00",
        "create_time": "2025-01-01T10:34:50+08:00",
        "status": "SUCCESS",
        "funds_account": "AVAILABLE",
        "amount": {
            "total": 1000,
            "refund": 300,
            "from": [],
            "payer_total": 1000,
            "payer_refund": 300,
            "settlement_refund": 300,
            "settlement_total": 1000,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }
    responses.post(REFUND_URL, match=[matchers.json_params_matcher(expected)], **wechat_answer(keys, answer))
    # When the merchant refunds part of the order
    result = live.refund(
        out_trade_no="T20250101000022",
        out_refund_no="R20250101000022",
        total_fen=1000,
        refund_fen=300,
        reason="买家取消",
    )
    # Then the refund is recorded as WeChat reports it
    assert result == protocol.RefundResult(
        out_refund_no="R20250101000022", refund_id="50000000382019052709732678859", status="SUCCESS"
    )


@responses.activate
def test_live_refund_in_progress(live: LiveWeChatPay, keys: SandboxKeys) -> None:
    answer = {"refund_id": "5001", "out_refund_no": "R20250101000023", "status": "PROCESSING"}
    responses.post(REFUND_URL, **wechat_answer(keys, answer))
    result = live.refund(
        out_trade_no="T20250101000023", out_refund_no="R20250101000023", total_fen=1000, refund_fen=1000, reason=""
    )
    assert result.status == "PROCESSING"
    assert "reason" not in json.loads(responses.calls[0].request.body or b"{}")


@pytest.mark.parametrize(
    "answer",
    [
        {"refund_id": "5001", "out_refund_no": "R20250101000024", "status": "WHATEVER"},
        {"refund_id": "5001", "out_refund_no": "another", "status": "SUCCESS"},
    ],
)
@responses.activate
def test_live_refund_unexpected_answers_are_upstream_errors(
    live: LiveWeChatPay, keys: SandboxKeys, answer: dict[str, Any]
) -> None:
    responses.post(REFUND_URL, **wechat_answer(keys, answer))
    with pytest.raises(UpstreamError):
        live.refund(
            out_trade_no="T20250101000024", out_refund_no="R20250101000024", total_fen=10, refund_fen=1, reason="x"
        )


@responses.activate
def test_live_refund_business_error_names_wechats_code(live: LiveWeChatPay) -> None:
    responses.post(REFUND_URL, status=403, json={"code": "NOT_ENOUGH", "message": "基本账户余额不足"})
    with pytest.raises(UpstreamError) as raised:
        live.refund(
            out_trade_no="T20250101000025", out_refund_no="R20250101000025", total_fen=10, refund_fen=1, reason="x"
        )
    assert "NOT_ENOUGH" in raised.value.message


def test_sandbox_refund_answers_processing_is_idempotent_and_refuses_more_than_paid(sandbox: SandboxWeChatPay) -> None:
    # Given a paid order at the twin (a refund needs one, as at WeChat)
    sandbox.jsapi_prepay(
        out_trade_no="T20250101000026", description="x", amount_fen=1000, payer_openid=OPENID, time_expire=EXPIRES
    )
    sandbox.user_pays("T20250101000026")
    args: dict[str, Any] = {"out_trade_no": "T20250101000026", "total_fen": 1000, "refund_fen": 600, "reason": ""}
    # When refunds are asked: WeChat answers PROCESSING and finishes later
    first = sandbox.refund(out_refund_no="R20250101000026", **args)
    assert first.status == "PROCESSING" and first.refund_id and first.refund_id.startswith("sbx_refund_")
    assert sandbox.refund(out_refund_no="R20250101000026", **args).refund_id == first.refund_id
    with pytest.raises(UpstreamError):  # 600 + 600 > 1000
        sandbox.refund(out_refund_no="R20250101000027", **args)


@pytest.mark.parametrize(
    "change",
    [
        {"refund_fen": 0},
        {"refund_fen": 1001},
        {"total_fen": -1},
        {"out_refund_no": ""},
        {"out_refund_no": "R 1"},
        {"out_trade_no": "T1"},
        {"reason": "x" * 81},
    ],
)
@responses.activate
def test_refunds_wechat_would_refuse_are_bad_requests(
    live: LiveWeChatPay, sandbox: SandboxWeChatPay, change: dict[str, Any]
) -> None:
    args = {
        "out_trade_no": "T20250101000028",
        "out_refund_no": "R20250101000028",
        "total_fen": 1000,
        "refund_fen": 500,
        "reason": "x",
        **change,
    }
    for client in (live, sandbox):
        with pytest.raises(InvalidInput) as raised:
            client.refund(**args)
        assert raised.value.code == "invalid_refund"
    assert len(responses.calls) == 0


# --- configuration and sandbox keys -------------------------------------------------------------


@pytest.mark.parametrize(
    "change", [{"apiv3_key": "short"}, {"private_key_pem": "not a key"}, {"public_key_pem": "not a key"}]
)
def test_a_misconfigured_merchant_fails_at_construction(config: PayConfig, change: dict[str, str]) -> None:
    with pytest.raises(UpstreamError) as raised:
        LiveWeChatPay(dataclasses.replace(config, **change))
    assert raised.value.code == "wechatpay_not_configured"


def test_the_sandbox_refuses_a_wechat_key_that_does_not_match_the_config(config: PayConfig, rogue_pem: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        SandboxWeChatPay(config, rogue_pem)


def test_secrets_stay_out_of_reprs(config: PayConfig, keys: SandboxKeys) -> None:
    for text in (repr(config), repr(keys)):
        assert "PRIVATE KEY" not in text and keys.apiv3_key not in text


def test_sandbox_keys_are_well_formed(keys: SandboxKeys, config: PayConfig) -> None:
    assert len(keys.apiv3_key) == 32 and keys.apiv3_key.isalnum()
    assert re.fullmatch(r"[0-9A-F]{40}", keys.cert_serial_no)
    assert re.fullmatch(r"PUB_KEY_ID_01\d{30}", keys.public_key_id)
    assert keys.merchant_public_key_pem != keys.wechat_public_key_pem
    assert (config.mchid, config.appid, config.notify_url) == (sandbox_keys.SANDBOX_MCHID, APPID, NOTIFY_URL)


def test_sandbox_keys_persist_across_restarts(
    tmp_path: Path, keys: SandboxKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated: list[SandboxKeys] = []

    def generate() -> SandboxKeys:  # the module's keys stand in for fresh ones: RSA generation is slow
        generated.append(keys)
        return keys

    monkeypatch.setattr(sandbox_keys, "generate_sandbox_keys", generate)
    directory = tmp_path / ".local" / "wechatpay"

    first = load_or_create_sandbox_keys(directory)
    second = load_or_create_sandbox_keys(directory)

    assert first == second == keys
    assert len(generated) == 1
    for name in ("apiclient_key.pem", "wechatpay_private_key.pem", "apiv3_key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert (directory / "pub_key.pem").read_text() == keys.wechat_public_key_pem

    config, wechat_pem = sandbox_config(NOTIFY_URL, APPID, directory)
    assert config == keys.config(notify_url=NOTIFY_URL, appid=APPID)
    assert wechat_pem == keys.wechat_private_key_pem


def test_sandbox_config_without_a_directory_is_fresh_and_consistent(
    keys: SandboxKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_keys, "generate_sandbox_keys", lambda: keys)
    config, wechat_pem = sandbox_config(NOTIFY_URL, APPID, mchid="1230000109")
    sandbox = SandboxWeChatPay(config, wechat_pem)
    headers, body = sandbox.notification_for("T20250101000029", 100, OPENID)
    notice = sandbox.parse_notification(headers, body)
    assert isinstance(notice, PaymentNotice) and notice.amount_fen == 100
    assert config.mchid == "1230000109"


def test_an_abnormal_refund_notification_has_no_success_time(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    headers, body = sandbox.refund_notification_for("T20250101000030", "R20250101000030", 1000, 1000, "ABNORMAL")
    notice = live.parse_notification(headers, body)
    assert (notice.event_type, notice.trade_state, notice.success_time) == ("REFUND.ABNORMAL", "ABNORMAL", None)


def test_a_prebuilt_wechatpayv3_client_can_be_injected(config: PayConfig) -> None:
    class FakeClient:
        def pay(self, **kwargs: Any) -> tuple[int, str]:
            assert kwargs["amount"] == {"total": 5, "currency": "CNY"}
            return 200, json.dumps({"prepay_id": "wx9"})

        def sign(self, data: list[str]) -> str:
            return "signed:" + "|".join(data)

    prepay = LiveWeChatPay(config, FakeClient()).jsapi_prepay(
        out_trade_no="T20250101000031", description="x", amount_fen=5, payer_openid=OPENID, time_expire=EXPIRES
    )
    assert prepay.package == "prepay_id=wx9"
    assert prepay.pay_sign == f"signed:{APPID}|{prepay.time_stamp}|{prepay.nonce_str}|prepay_id=wx9"


def test_the_sandbox_needs_an_rsa_key(config: PayConfig) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(ValueError, match="RSA"):
        SandboxWeChatPay(config, ec_pem.decode())


# --- contract: WeChat Pay's documented answers, read by the live client and played by the twin ---------

# 查询订单 (JSAPI), from WeChat Pay's documentation (ids shortened to our test merchant)
DOC_QUERY_PAID = {
    "amount": {"currency": "CNY", "payer_currency": "CNY", "payer_total": 1, "total": 1},
    "appid": APPID,
    "attach": "",
    "bank_type": "OTHERS",
    "mchid": "1900000109",
    "out_trade_no": "44_2126281063_5504",
    "payer": {"openid": "o4GgauJP_mgWEWictzA15WT15XXX"},
    "promotion_detail": [],
    "success_time": "2021-03-22T10:29:05+08:00",
    "trade_state": "SUCCESS",
    "trade_state_desc": "支付成功",
    "trade_type": "JSAPI",
    "transaction_id": "4200000891202103228088184743",
}
DOC_QUERY_UNPAID = {
    "amount": {"currency": "CNY", "payer_currency": "CNY", "total": 1},
    "appid": APPID,
    "mchid": "1900000109",
    "out_trade_no": "44_2126281063_5505",
    "promotion_detail": [],
    "scene_info": {"device_id": ""},
    "trade_state": "NOTPAY",
    "trade_state_desc": "订单未支付",
}
# 申请退款: WeChat answers while the refund is still processing; it finishes by notification
DOC_REFUND: dict[str, Any] = {
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "1217752501201407033233368018",
    "transaction_id": "1217752501201407033233368018",
    "out_trade_no": "1217752501201407033233368018",
    "channel": "ORIGINAL",
    "user_received_account": "招商银行信用卡0403",
    "create_time": "2020-12-01T16:18:12+08:00",
    "status": "PROCESSING",
    "funds_account": "UNSETTLED",
    "amount": {"total": 100, "refund": 100, "payer_total": 90, "payer_refund": 90, "settlement_refund": 100,
               "settlement_total": 100, "discount_refund": 10, "currency": "CNY"},
}  # fmt: skip
ORDER_URL = f"{GATEWAY}/v3/pay/transactions/out-trade-no"


@responses.activate
def test_documented_order_queries_read_as_payment_states(keys: SandboxKeys, live: LiveWeChatPay) -> None:
    responses.get(f"{ORDER_URL}/44_2126281063_5504", **wechat_answer(keys, DOC_QUERY_PAID))
    responses.get(f"{ORDER_URL}/44_2126281063_5505", **wechat_answer(keys, DOC_QUERY_UNPAID))
    responses.get(f"{ORDER_URL}/T_UNKNOWN_1", status=404, json={"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
    paid = live.query("44_2126281063_5504")
    assert paid is not None and (paid.trade_state, paid.amount_fen, paid.transaction_id) == (
        "SUCCESS", 1, "4200000891202103228088184743",
    )  # fmt: skip
    assert paid.success_time == "2021-03-22T10:29:05+08:00" and paid.payer_openid
    unpaid = live.query("44_2126281063_5505")
    assert unpaid is not None and (unpaid.trade_state, unpaid.transaction_id, unpaid.success_time) == (
        "NOTPAY", None, None,
    )  # fmt: skip
    assert live.query("T_UNKNOWN_1") is None


@responses.activate
def test_a_documented_refund_answer_is_processing(keys: SandboxKeys, live: LiveWeChatPay) -> None:
    responses.post(REFUND_URL, **wechat_answer(keys, DOC_REFUND))
    result = live.refund(
        out_trade_no="1217752501201407033233368018", out_refund_no="1217752501201407033233368018",
        total_fen=100, refund_fen=100, reason="",
    )  # fmt: skip
    assert (result.status, result.refund_id) == ("PROCESSING", "50000000382019052709732678859")


def test_the_twin_answers_like_the_documented_samples(sandbox: SandboxWeChatPay, live: LiveWeChatPay) -> None:
    # Given an order prepaid at the twin: WeChat's NOTPAY answer has no transaction, payer or time
    sandbox.jsapi_prepay(
        out_trade_no="T20250101000040", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
    )
    unpaid = sandbox.query("T20250101000040")
    documented = protocol.parse_payment_state(DOC_QUERY_UNPAID, "44_2126281063_5505")
    assert unpaid is not None
    assert (unpaid.trade_state, unpaid.transaction_id, unpaid.payer_openid, unpaid.success_time) == (
        documented.trade_state, documented.transaction_id, documented.payer_openid, documented.success_time,
    )  # fmt: skip
    # When it is paid: SUCCESS with a transaction, the payer and WeChat's success time (China time)
    sandbox.user_pays("T20250101000040")
    paid = sandbox.query("T20250101000040")
    assert paid is not None and paid.trade_state == "SUCCESS" and paid.transaction_id and paid.payer_openid == OPENID
    assert paid.success_time is not None and paid.success_time.endswith("+08:00")
    # And a refund answers PROCESSING, like the documented answer, until WeChat finishes it
    refund = sandbox.refund(
        out_trade_no="T20250101000040", out_refund_no="R20250101000040", total_fen=1, refund_fen=1, reason=""
    )
    assert refund.status == protocol.parse_refund_result(DOC_REFUND, DOC_REFUND["out_refund_no"]).status == "PROCESSING"


def test_a_closed_order_cannot_be_paid_at_the_twin(sandbox: SandboxWeChatPay) -> None:
    sandbox.jsapi_prepay(
        out_trade_no="T20250101000041", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
    )
    sandbox.close("T20250101000041")
    assert sandbox.query("T20250101000041").trade_state == "CLOSED"  # type: ignore[union-attr]
    with pytest.raises(StateConflict):
        sandbox.user_pays("T20250101000041")
    with pytest.raises(StateConflict):  # ORDERCLOSED: a closed order is never prepaid again
        sandbox.jsapi_prepay(
            out_trade_no="T20250101000041", description="x", amount_fen=1, payer_openid=OPENID, time_expire=EXPIRES
        )


def test_an_expired_order_cannot_be_paid_at_the_twin(sandbox: SandboxWeChatPay) -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    sandbox.jsapi_prepay(
        out_trade_no="T20250101000042", description="x", amount_fen=1, payer_openid=OPENID, time_expire=past
    )
    with pytest.raises(StateConflict):
        sandbox.user_pays("T20250101000042")
