"""Secret settings read at cold start from AWS Secrets Manager or SSM Parameter Store.

A deployed function's environment names its secrets and holds none of them: `SECRETS_ID` is a
comma-separated list of sources, each a JSON object whose keys are settings field names
(`{"jwt_secret": "...", "wechatpay_private_key": "-----BEGIN ..."}`), merged in order over the
plain environment. A source is a Secrets Manager secret (its name or ARN) or, written
`ssm:<name>` or as an `arn:...:ssm:...:parameter/...` ARN, an SSM SecureString parameter
(decrypted). One source per group of secrets lets each function read only the groups it needs
(infra/iam.py grants them).

Values come through Powertools parameters, cached for the life of the container (`MAX_AGE`):
`get_settings()` reads them once per cold start. Any failure (missing secret, no permission, not
JSON, a key that is no setting) raises `SecretsError` and the function refuses to start, rather
than run on defaults. This module is imported only when `SECRETS_ID` is set, so the local stack
and the tests never load boto3 for it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aws_lambda_powertools.utilities import parameters

MAX_AGE = 365 * 24 * 3600  # a container reads its secrets once; rotation takes effect at the next cold start
SSM_PREFIX = "ssm:"


class SecretsError(RuntimeError):
    """A secret source could not be read or holds something that is not settings."""


def source_ids(secrets_id: str) -> list[str]:
    """The sources named by a `SECRETS_ID` value, in order (blank entries ignored)."""
    return [part.strip() for part in secrets_id.split(",") if part.strip()]


def _is_ssm(source: str) -> bool:
    return source.startswith(SSM_PREFIX) or (source.startswith("arn:") and source.split(":")[2:3] == ["ssm"])


def _fetch(source: str) -> Any:
    if _is_ssm(source):
        name = source.removeprefix(SSM_PREFIX)
        return parameters.get_parameter(name, decrypt=True, transform="json", max_age=MAX_AGE)
    return parameters.get_secret(source, transform="json", max_age=MAX_AGE)


def load(secrets_id: str, fields: Collection[str]) -> dict[str, Any]:
    """Every source of `secrets_id` merged (later sources win); keys must be among `fields`."""
    sources = source_ids(secrets_id)
    if not sources:
        raise SecretsError("SECRETS_ID names no secret")
    merged: dict[str, Any] = {}
    for source in sources:
        try:
            values = _fetch(source)
        except (parameters.GetParameterError, parameters.TransformParameterError) as exc:
            raise SecretsError(f"secret {source!r} could not be read: {exc}") from exc
        if not isinstance(values, dict):
            raise SecretsError(f"secret {source!r} is not a JSON object of settings")
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise SecretsError(f"secret {source!r} has keys that are no setting: {unknown}")
        merged.update(values)
    return merged
