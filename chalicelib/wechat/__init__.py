"""WeChat clients: the real ones and their sandbox twins, picked by `settings.wechat_mode`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from tempfile import gettempdir
from typing import TYPE_CHECKING

from chalicelib.caches import cached
from chalicelib.errors import UpstreamError
from chalicelib.settings import get_settings
from chalicelib.wechat.miniprogram import LiveMiniProgram, MiniProgram, SandboxMiniProgram

if TYPE_CHECKING:
    from chalicelib.wechat.pay.protocol import PayConfig, WeChatPay
    from chalicelib.wechat.transfer.protocol import TransferProvider


@cached(maxsize=1)
def get_miniprogram() -> MiniProgram:
    settings = get_settings()
    if settings.sandbox:
        return SandboxMiniProgram(settings.public_base_url)
    secrets = {appid: secret.get_secret_value() for appid, secret in settings.wechat_app_secrets.items()}
    return LiveMiniProgram(secrets, env_version=settings.wxacode_env_version)


def payment_notify_url(appid: str) -> str:
    """Where WeChat Pay sends a tenant's payment and refund notifications. WeChat forbids query
    strings in notify URLs (通知URL不能携带参数), so the tenant is in the path."""
    return f"{get_settings().public_base_url.rstrip('/')}/v1/callbacks/wechatpay/{appid}/payment"


def transfer_notify_url(appid: str) -> str:
    """Where WeChat Pay sends a tenant's MCHTRANSFER.BILL.FINISHED callbacks (tenant in the path)."""
    return f"{get_settings().public_base_url.rstrip('/')}/v1/callbacks/wechatpay/{appid}/transfer"


def sandbox_dir() -> Path:
    """The sandbox twins' state: keys per tenant, WeChat's side of payments and bills, the outbox."""
    settings = get_settings()
    return Path(settings.sandbox_keys_dir or Path(gettempdir()) / "fenxiao-wechatpay-sandbox")


def sandbox_mchid(appid: str) -> str:
    """Each sandbox tenant has a merchant account of its own (10 digits, like a real 商户号)."""
    return "19" + str(int(hashlib.sha256(appid.encode()).hexdigest(), 16))[:8]


def _sandbox_config(appid: str, notify_url: str) -> tuple[PayConfig, str]:
    """A tenant's sandbox merchant: its own keys (under `<sandbox dir>/keys/<appid>`) and merchant id."""
    from chalicelib.wechat.pay.keys import sandbox_config  # function-local: the clients load on first use (cold start)

    return sandbox_config(notify_url, appid, sandbox_dir() / "keys" / appid, mchid=sandbox_mchid(appid))


def _live_config(appid: str, notify_url: str) -> PayConfig:
    """The merchant account's configuration for a tenant, or UpstreamError naming what is missing."""
    from chalicelib.wechat.pay.protocol import PayConfig, check_notify_url  # function-local: cold start, as above

    settings = get_settings()
    check_notify_url(notify_url)
    missing = [
        name
        for name in ("wechatpay_mchid", "wechatpay_apiv3_key", "wechatpay_private_key", "wechatpay_cert_serial",
                     "wechatpay_public_key", "wechatpay_public_key_id")
        if not getattr(settings, name)
    ]  # fmt: skip
    if missing:
        raise UpstreamError("WeChat Pay is not configured: " + ", ".join(missing), code="wechatpay_not_configured")
    apiv3_key, private_key = settings.wechatpay_apiv3_key, settings.wechatpay_private_key
    return PayConfig(
        mchid=str(settings.wechatpay_mchid),
        appid=appid,
        apiv3_key=apiv3_key.get_secret_value() if apiv3_key else "",
        private_key_pem=private_key.get_secret_value() if private_key else "",
        cert_serial_no=str(settings.wechatpay_cert_serial),
        public_key_pem=str(settings.wechatpay_public_key),
        public_key_id=str(settings.wechatpay_public_key_id),
        notify_url=notify_url,
    )


@cached(maxsize=32)
def get_pay(appid: str) -> WeChatPay:
    """The WeChat Pay client for a tenant: the sandbox twin, or the real merchant account."""
    # function-local: the clients and their twins load on first use, not at the Lambda's cold start
    from chalicelib.wechat.pay.live import LiveWeChatPay
    from chalicelib.wechat.pay.sandbox import SandboxWeChatPay

    settings = get_settings()
    notify_url = payment_notify_url(appid)
    if settings.sandbox:
        config, wechat_key = _sandbox_config(appid, notify_url)
        return SandboxWeChatPay(
            config,
            wechat_key,
            db_path=sandbox_dir() / "payments.sqlite3",
            refund_seconds=settings.sandbox_refund_seconds,
        )
    return LiveWeChatPay(_live_config(appid, notify_url))


@cached(maxsize=32)
def get_transfer(appid: str) -> TransferProvider:
    """The merchant-transfer client for a tenant: the sandbox twin, or the real merchant account.
    WeChat calls back at `/v1/callbacks/wechatpay/<appid>/transfer`."""
    # function-local: the clients and their twins load on first use, not at the Lambda's cold start
    from chalicelib.wechat.pay.live import LiveWeChatPay
    from chalicelib.wechat.transfer.live import LiveTransfer
    from chalicelib.wechat.transfer.sandbox import SandboxTransfer

    settings = get_settings()
    notify_url = transfer_notify_url(appid)
    if settings.sandbox:
        config, wechat_key = _sandbox_config(appid, notify_url)
        return SandboxTransfer(config, wechat_key, sandbox_dir() / "transfers.sqlite3")
    config = _live_config(appid, notify_url)
    return LiveTransfer(
        LiveWeChatPay(config),
        config,
        scene_id=settings.wechatpay_transfer_scene_id,
        report_infos=settings.wechatpay_transfer_report_infos,
    )
