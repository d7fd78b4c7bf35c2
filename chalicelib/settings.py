"""Settings read from the environment through one cached factory.

Nothing here touches AWS; a missing required setting fails loudly at first use. (A plain
pydantic model over `os.environ` rather than pydantic-settings: it halves import time.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

JSON_FIELDS = ("wechat_app_secrets", "merchant_secrets", "wechatpay_transfer_report_infos")


class Settings(BaseModel):
    """Runtime configuration of one deployment (stage)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    table_prefix: str = Field(min_length=3, description="Tables are named <prefix>-<table>.")
    jwt_secret: SecretStr = Field(min_length=16)
    jwt_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    admin_jwt_ttl_seconds: int = Field(default=12 * 3600, gt=0)
    aws_region: str = "ap-shanghai"
    dynamodb_endpoint: str | None = None
    wechat_mode: Literal["sandbox", "live"] = Field(
        description="Required: `live` talks to WeChat; `sandbox` runs the local twins (dev-<name> logs anyone in)."
    )
    default_tenant: str | None = None
    wechat_app_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="appid -> app secret for code2Session (live mode)."
    )
    public_base_url: str = "http://127.0.0.1:8000"
    wxacode_env_version: Literal["release", "trial", "develop"] = "release"
    wechatpay_mchid: str | None = None
    wechatpay_apiv3_key: SecretStr | None = None
    wechatpay_private_key: SecretStr | None = None
    wechatpay_cert_serial: str | None = None
    wechatpay_public_key: str | None = None
    wechatpay_public_key_id: str | None = None
    sandbox_keys_dir: str | None = None
    sandbox_refund_seconds: float = Field(
        default=2.0, ge=0, description="Sandbox: how long a refund stays PROCESSING before WeChat's twin finishes it."
    )
    pay_window_minutes: int = Field(
        default=120, gt=0, le=7 * 24 * 60, description="An unpaid order can be paid this long (time_expire)."
    )
    wechatpay_transfer_scene_id: str = Field(
        default="1005", description="商家转账 scene: 1005 佣金报酬 (commission) unless the merchant has another."
    )
    wechatpay_transfer_report_infos: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"info_type": "岗位类型", "info_content": "推广员"},
            {"info_type": "报酬说明", "info_content": "分销佣金"},
        ],
        description="transfer_scene_report_infos sent with every bill (what the scene requires).",
    )
    payout_queue_url: str | None = Field(default=None, description="SQS queue of payout messages (cloud).")
    jobs_queue_url: str | None = Field(default=None, description="SQS queue of per-tenant job runs (cloud).")
    local_queue_dir: str | None = Field(
        default=None, description="Local stack: spool directory the event runner drains as the payout queue."
    )
    merchant_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="merchant id -> HMAC secret of the server-to-server order API."
    )
    share_page: str = "pages/index/index"
    product_page: str = "pages/product/detail"

    @property
    def sandbox(self) -> bool:
        """True when WeChat is played by the local sandbox twin."""
        return self.wechat_mode == "sandbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from environment variables named like the fields, upper-cased."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(name.upper())
            if raw is None or raw == "":
                continue
            values[name] = json.loads(raw) if name in JSON_FIELDS else raw
        if "aws_region" not in values and env.get("AWS_DEFAULT_REGION"):
            values["aws_region"] = env["AWS_DEFAULT_REGION"]
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment."""
    return Settings.from_env(os.environ)
