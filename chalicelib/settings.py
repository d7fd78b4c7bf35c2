"""Settings read from the environment through one cached factory.

A missing required setting fails loudly at first use. (A plain pydantic model over `os.environ`
rather than pydantic-settings: it halves import time.) Secrets: when `SECRETS_ID` is set (every
deployed function), `get_settings()` reads them from Secrets Manager / SSM at cold start
(`chalicelib/secrets.py`) and merges them over the environment; without it (the local stack, the
tests) they come from the environment as before. A Lambda function in live mode refuses to start
without `SECRETS_ID` or with a secret in its plaintext environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chalicelib.caches import cached

JSON_FIELDS = ("wechat_app_secrets", "wechatpay_transfer_report_infos")


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
    exports_bucket: str | None = Field(
        default=None, description="S3 bucket of exports (cloud): multipart uploads, pre-signed download links."
    )
    local_exports_dir: str | None = Field(
        default=None, description="Local stack: directory of exports, served at signed, expiring links."
    )
    export_rows_per_run: int = Field(default=500_000, gt=0, description="Rows one invocation exports at most.")
    export_seconds_per_run: float = Field(default=600.0, gt=0, description="Seconds one invocation exports at most.")
    export_part_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="Bytes per uploaded part (S3 needs at least 5 MiB)."
    )
    merchant_key: SecretStr | None = Field(
        default=None,
        description="Base64 of 32 random bytes: seals merchant API secrets at rest (AES-GCM) in the merchants table.",
    )
    share_page: str = "pages/index/index"
    product_page: str = "pages/product/detail"

    @property
    def sandbox(self) -> bool:
        """True when WeChat is played by the local sandbox twin."""
        return self.wechat_mode == "sandbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str], secrets: Mapping[str, Any] | None = None) -> Settings:
        """Settings from environment variables named like the fields, upper-cased, with `secrets`
        (field name -> value, as read from a secret store) taking precedence."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(name.upper())
            if raw is None or raw == "":
                continue
            values[name] = json.loads(raw) if name in JSON_FIELDS else raw
        for name, value in (secrets or {}).items():
            values[name] = json.loads(value) if name in JSON_FIELDS and isinstance(value, str) else value
        if "aws_region" not in values and env.get("AWS_DEFAULT_REGION"):
            values["aws_region"] = env["AWS_DEFAULT_REGION"]
        return cls.model_validate(values)


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


SECRET_FIELDS = frozenset(name for name, field in Settings.model_fields.items() if _is_secret(field.annotation))


class StartupError(RuntimeError):
    """The deployment's configuration would run with secrets exposed or missing: refuse to start."""


def load(env: Mapping[str, str]) -> Settings:
    """Settings for this process: the environment, plus the secret store when `SECRETS_ID` is set."""
    secrets_id = env.get("SECRETS_ID", "").strip()
    in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
    if in_lambda and env.get("WECHAT_MODE") == "live":
        if not secrets_id:
            raise StartupError(
                "WECHAT_MODE=live in Lambda needs SECRETS_ID: secrets are never read from the environment"
            )
        exposed = sorted(name.upper() for name in SECRET_FIELDS if env.get(name.upper()))
        if exposed:
            raise StartupError(f"secrets in the plaintext Lambda environment: {exposed}; keep them in SECRETS_ID")
    if not secrets_id:
        return Settings.from_env(env)
    from chalicelib import secrets  # Powertools parameters and boto3: only on a cold start that needs them

    return Settings.from_env(env, secrets.load(secrets_id, Settings.model_fields))


@cached(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment (and the
    secret store, whose values Powertools caches for the container's life)."""
    return load(os.environ)
