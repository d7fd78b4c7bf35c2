"""Merchant credentials of the order API: each merchant id belongs to exactly one tenant.

Operators create them with the admin CLI (`python -m devtools.admin merchant <appid> <id>`);
the secret is shown once and stored sealed (`chalicelib.secretbox`, the deployment's
`MERCHANT_KEY`). Rotation keeps the old secret valid beside the new one until it is retired, so
a merchant switches without a failed request. Every change is audited on the tenant's trail
(entity `merchant:<id>`); secrets never appear in audit data or logs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import replace

from chalicelib import secretbox
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, MerchantCredential
from chalicelib.errors import InvalidInput, Missing, NotConfigured, StateConflict
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.signing import valid_merchant_id
from chalicelib.store import get_store

MIN_SECRET = 24
MAX_SECRET = 128
_SECRET = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a merchant can put in a config file


def _key() -> str:
    key = get_settings().merchant_key
    if key is None:
        raise NotConfigured(
            "the merchant API is not configured in this deployment (MERCHANT_KEY is not set)",
            code="merchant_api_unconfigured",
        )
    return key.get_secret_value()


def new_secret(given: str | None = None) -> str:
    """The secret to issue: the one given (checked) or 32 random bytes, URL-safe."""
    if given is None:
        return secrets.token_urlsafe(32)
    if not (MIN_SECRET <= len(given) <= MAX_SECRET) or _SECRET.fullmatch(given) is None:
        raise InvalidInput(
            f"a merchant secret is {MIN_SECRET} to {MAX_SECRET} visible ASCII characters", code="bad_secret"
        )
    return given


def secrets_of(credential: MerchantCredential) -> list[str]:
    """The merchant's valid secrets, newest first (two while a rotation is under way)."""
    key = _key()
    sealed = [credential.current] + ([credential.previous] if credential.previous else [])
    opened = []
    for value in sealed:
        try:
            opened.append(secretbox.open_sealed(key, value, credential.associated))
        except secretbox.SecretBoxError:
            # A record altered in the table, or sealed under another key: no request can pass with it.
            logger.error("merchant secret does not open", extra={"merchant": credential.merchant})
    return opened


def create(tenant: str, merchant: str, name: str, secret: str | None, actor: str) -> str:
    """Create a merchant of `tenant`; returns its secret (shown once). 409 if the id is taken."""
    if not valid_merchant_id(merchant):
        raise InvalidInput("a merchant id is 1 to 64 letters, digits, '_' or '-'", code="bad_merchant_id")
    store = get_store()
    if store.tenants.get(tenant) is None:
        raise Missing(f"unknown tenant {tenant}", code="unknown_tenant")
    issued = new_secret(secret)
    credential = MerchantCredential(merchant=merchant, tenant=tenant, name=name or merchant, current="")
    credential = replace(credential, current=secretbox.seal(_key(), issued, credential.associated))
    event = AuditEvent(entity=f"merchant:{merchant}", action="merchant.created", actor=actor, data={"name": name})
    if not store.merchants.create(credential, event, utcnow()):
        raise StateConflict(
            f"merchant id {merchant} is taken (merchant ids are unique across tenants)", code="merchant_exists"
        )
    return issued


def _change(
    tenant: str, merchant: str, actor: str, action: str, change: Callable[[MerchantCredential], MerchantCredential]
) -> MerchantCredential:
    store = get_store()
    before = store.merchants.get(merchant)
    if before is None or before.tenant != tenant:
        raise Missing(f"no merchant {merchant} in tenant {tenant}", code="unknown_merchant")
    after = change(before)
    event = AuditEvent(entity=f"merchant:{merchant}", action=action, actor=actor, data={})
    if not store.merchants.replace(before, after, event, utcnow()):
        raise StateConflict(f"merchant {merchant} changed meanwhile: try again", code="merchant_changed")
    return after


def rotate(tenant: str, merchant: str, secret: str | None, actor: str) -> str:
    """Issue a new secret; the current one stays valid as the previous until retired."""
    issued = new_secret(secret)

    def change(before: MerchantCredential) -> MerchantCredential:
        return replace(before, current=secretbox.seal(_key(), issued, before.associated), previous=before.current)

    _change(tenant, merchant, actor, "merchant.secret_rotated", change)
    return issued


def retire_previous(tenant: str, merchant: str, actor: str) -> None:
    """End the secret before the last rotation."""
    _change(tenant, merchant, actor, "merchant.previous_secret_retired", lambda before: replace(before, previous=None))


def set_disabled(tenant: str, merchant: str, disabled: bool, actor: str) -> None:
    """Disable (every request refused at once) or enable a merchant."""
    action = "merchant.disabled" if disabled else "merchant.enabled"
    _change(tenant, merchant, actor, action, lambda before: replace(before, disabled=disabled))
