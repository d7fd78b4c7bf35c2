"""Secrets come from Secrets Manager or SSM at cold start (moto), never from a live function's environment."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import SECRET_FIELDS, StartupError, get_settings
from tests.envutil import environ

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REGION = "cn-north-1"
PLAIN = {"TABLE_PREFIX": "fenxiao-test", "WECHAT_MODE": "live", "AWS_LAMBDA_FUNCTION_NAME": "fenxiao-APIHandler"}
APP = {"jwt_secret": "j" * 48, "wechat_app_secrets": {"wx0000000000000001": "app-secret-1"}}
PAY = {
    "wechatpay_mchid": "1900000001",
    "wechatpay_apiv3_key": "k" * 32,
    "wechatpay_private_key": "-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for name in SECRET_FIELDS:  # a stack fixture of this worker may have set them for the app
        monkeypatch.delenv(name.upper(), raising=False)
    with environ(env), mock_aws():
        parameters.clear_caches()
        get_settings.cache_clear()
        yield {
            "secretsmanager": boto3.client("secretsmanager", region_name=REGION),
            "ssm": boto3.client("ssm", region_name=REGION),
        }
    parameters.clear_caches()
    get_settings.cache_clear()


def lambda_env(**values: str) -> dict[str, str]:
    """A deployed function's environment: the plain settings and whatever the test adds."""
    return {**PLAIN, **values}


def settings_with(env: dict[str, str]) -> Any:
    get_settings.cache_clear()
    with environ(env):
        return get_settings()


def test_secrets_manager_values_are_merged_over_the_environment(aws: dict[str, Any]) -> None:
    # Given two secrets, as the template gives the payout worker (the app group and WeChat Pay)
    sm = aws["secretsmanager"]
    app_arn = sm.create_secret(Name="fenxiao/test/app", SecretString=json.dumps(APP))["ARN"]
    sm.create_secret(Name="fenxiao/test/wechatpay", SecretString=json.dumps(PAY))

    # When a function starts with only their ids in its environment (an ARN and a name)
    settings = settings_with(lambda_env(SECRETS_ID=f"{app_arn}, fenxiao/test/wechatpay"))

    # Then every secret is a setting, and the plain environment still counts
    assert settings.jwt_secret.get_secret_value() == APP["jwt_secret"]
    assert settings.wechat_app_secrets["wx0000000000000001"].get_secret_value() == "app-secret-1"
    assert settings.wechatpay_mchid == PAY["wechatpay_mchid"]
    assert settings.wechatpay_apiv3_key is not None and settings.wechatpay_apiv3_key.get_secret_value() == "k" * 32
    assert settings.wechatpay_private_key is not None
    assert settings.wechatpay_private_key.get_secret_value() == PAY["wechatpay_private_key"]
    assert settings.table_prefix == "fenxiao-test"
    assert not settings.sandbox


def test_ssm_securestring_parameters_are_a_source_too(aws: dict[str, Any]) -> None:
    ssm = aws["ssm"]
    # JSON fields may also be stored as JSON text (as the CloudFormation dynamic references needed)
    stored = {**APP, "wechat_app_secrets": json.dumps(APP["wechat_app_secrets"]), "merchant_key": "bWsK" * 11}
    ssm.put_parameter(Name="/fenxiao/test/app", Value=json.dumps(stored), Type="SecureString")
    arn = f"arn:aws-cn:ssm:{REGION}:123456789012:parameter/fenxiao/test/pay"
    ssm.put_parameter(Name="/fenxiao/test/pay", Value=json.dumps(PAY), Type="SecureString")

    settings = settings_with(lambda_env(SECRETS_ID=f"ssm:/fenxiao/test/app,{arn}"))

    assert settings.jwt_secret.get_secret_value() == APP["jwt_secret"]
    assert settings.wechat_app_secrets["wx0000000000000001"].get_secret_value() == "app-secret-1"
    assert settings.merchant_key is not None and settings.merchant_key.get_secret_value() == "bWsK" * 11
    assert settings.wechatpay_mchid == PAY["wechatpay_mchid"]


def test_secrets_are_read_once_per_container(aws: dict[str, Any]) -> None:
    sm = aws["secretsmanager"]
    sm.create_secret(Name="fenxiao/test/app", SecretString=json.dumps(APP))
    env = lambda_env(SECRETS_ID="fenxiao/test/app")

    first = settings_with(env)
    # When the secret changes at the store, and the settings are even built again
    sm.put_secret_value(SecretId="fenxiao/test/app", SecretString=json.dumps({**APP, "jwt_secret": "n" * 48}))
    again = settings_with(env)

    # Then this container keeps what it read at its cold start (Powertools' cache): no second call
    assert again.jwt_secret.get_secret_value() == first.jwt_secret.get_secret_value() == APP["jwt_secret"]
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # a new container
    assert settings_with(env).jwt_secret.get_secret_value() == "n" * 48


def test_a_missing_secret_fails_loudly(aws: dict[str, Any]) -> None:
    from chalicelib.secrets import SecretsError

    with pytest.raises(SecretsError, match="fenxiao/test/nothing"):
        settings_with(lambda_env(SECRETS_ID="fenxiao/test/nothing"))
    with pytest.raises(SecretsError, match="/fenxiao/test/nothing"):
        settings_with(lambda_env(SECRETS_ID="ssm:/fenxiao/test/nothing"))


def test_a_secret_that_is_not_settings_fails_loudly(aws: dict[str, Any]) -> None:
    from chalicelib.secrets import SecretsError

    sm = aws["secretsmanager"]
    sm.create_secret(Name="fenxiao/test/typo", SecretString=json.dumps({**APP, "jwt_secert": "x" * 32}))
    sm.create_secret(Name="fenxiao/test/text", SecretString="not json")
    with pytest.raises(SecretsError, match="jwt_secert"):
        settings_with(lambda_env(SECRETS_ID="fenxiao/test/typo"))
    with pytest.raises(SecretsError, match="fenxiao/test/text"):
        settings_with(lambda_env(SECRETS_ID="fenxiao/test/text"))


def test_a_live_function_without_a_secret_source_refuses_to_start() -> None:
    with pytest.raises(StartupError, match="SECRETS_ID"):
        settings_with(lambda_env(JWT_SECRET="j" * 48))


@pytest.mark.parametrize("field", sorted(SECRET_FIELDS))
def test_a_live_function_refuses_secrets_in_its_plaintext_environment(aws: dict[str, Any], field: str) -> None:
    aws["secretsmanager"].create_secret(Name="fenxiao/test/app", SecretString=json.dumps(APP))
    value = "{}" if field == "wechat_app_secrets" else "s" * 32
    with pytest.raises(StartupError, match=field.upper()):
        settings_with(lambda_env(SECRETS_ID="fenxiao/test/app", **{field.upper(): value}))


def test_the_secret_fields_are_the_ones_issue_10_names() -> None:
    assert {"jwt_secret", "wechat_app_secrets", "wechatpay_apiv3_key", "wechatpay_private_key", "merchant_key"} <= (
        SECRET_FIELDS
    )


def test_locally_the_environment_still_works_and_loads_no_secret_store() -> None:
    # the local stack and the tests: no SECRETS_ID, not in Lambda (a sandbox stage may be live-less)
    code = (
        "import sys, os\n"
        "os.environ.update(TABLE_PREFIX='local', JWT_SECRET='j'*32, WECHAT_MODE='live')\n"
        "from chalicelib.settings import get_settings\n"
        "assert get_settings().jwt_secret.get_secret_value() == 'j'*32\n"
        "print(','.join(m for m in ('chalicelib.secrets', 'aws_lambda_powertools.utilities.parameters', 'boto3')"
        " if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == ""
