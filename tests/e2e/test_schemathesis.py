"""schemathesis against the running local stack (issue 10 §5): every operation of /v1/openapi.json
fuzzed with valid and invalid input, as a mini-program user and as each operator role. Checks: no
5xx, every response matches its documented status and schema, and every error code is one the
operation documents (`x-error-codes`).

It runs in a mini-program of its own (FUZZ_TENANT), so what the fuzzer creates or changes (plans,
rules, products, coupons, job runs) never meets the other end-to-end tests' tenant. Examples per
operation are bounded (MAX_EXAMPLES) and the coverage phase is off to keep `make test` short.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from chalicelib.api.openapi import build_document
from tests.e2e.conftest import LiveApi
from tests.stack import unique

FUZZ_TENANT = "wxfuzz00000000c1"
ROLES = ("owner", "ops", "finance", "auditor")
# Examples per operation: the owner (who may call everything) and the user get more; the other
# roles mostly meet 403 `forbidden`, which a couple of examples prove. About a minute in all.
MAX_EXAMPLES = 4
FEW_EXAMPLES = 2

CONFIG = schemathesis.config.SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
schema = schemathesis.openapi.from_dict(build_document(), config=CONFIG)


def _security(ctx: Any) -> str:
    security = ctx.operation.definition.raw.get("security") or [{}]
    return next(iter(security[0]), "none")


def documented_error_code(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx/5xx names a code its operation lists in `x-error-codes`."""
    if response.status_code < 400:
        return None
    body = response.json()
    code = body["error"]["code"]
    allowed = case.operation.definition.raw["x-error-codes"]
    assert code in allowed, f"{case.operation.label} answered undocumented error code {code!r}: {body}"
    return None


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, documented_error_code]


def _settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure here is reproducible
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def fuzz_api(live_api: LiveApi) -> LiveApi:
    """A mini-program of its own with an operator per role (passwords pw-<role>)."""
    from chalicelib.auth import hash_password
    from chalicelib.clock import utcnow
    from chalicelib.entities import Admin, Role, Tenant
    from chalicelib.store import get_store

    store = get_store()
    store.tenants.put(Tenant(FUZZ_TENANT, "Fuzz"), utcnow())
    for role in ROLES:
        if store.admins.get(FUZZ_TENANT, role) is None:
            store.admins.put(Admin(FUZZ_TENANT, role, hash_password("pw-" + role), Role(role)), utcnow())
    return dataclasses.replace(live_api, tenant=FUZZ_TENANT)


@pytest.fixture(scope="module")
def tokens(fuzz_api: LiveApi) -> dict[str, str]:
    user, _ = fuzz_api.login(unique("fuzz"))
    return {"user": user, **{role: fuzz_api.admin(role) for role in ROLES}}


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _call(case: Any, api: LiveApi, session: requests.Session, token: str | None) -> None:
    headers = {"X-Appid": api.tenant}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    case.call_and_validate(base_url=api.url, session=session, headers=headers, checks=CHECKS, timeout=30)


@schema.include(lambda ctx: _security(ctx) in ("none", "user", "merchantId", "wechatpaySignature")).parametrize()
@_settings(MAX_EXAMPLES)
def test_as_a_user(case: Any, fuzz_api: LiveApi, tokens: dict[str, str], session: requests.Session) -> None:
    """Public, mini-program, merchant and callback routes (the latter two refuse the unsigned fuzz)."""
    _call(case, fuzz_api, session, tokens["user"])


ADMIN_ROUTES = schema.include(lambda ctx: _security(ctx) == "operator")


@ADMIN_ROUTES.parametrize()
@_settings(MAX_EXAMPLES)
def test_as_the_owner(case: Any, fuzz_api: LiveApi, tokens: dict[str, str], session: requests.Session) -> None:
    """Every admin route as the owner, who may call them all."""
    _call(case, fuzz_api, session, tokens["owner"])


@pytest.mark.parametrize("role", ["ops", "finance", "auditor"])
@ADMIN_ROUTES.parametrize()
@_settings(FEW_EXAMPLES)
def test_as_each_other_operator_role(
    case: Any, role: str, fuzz_api: LiveApi, tokens: dict[str, str], session: requests.Session
) -> None:
    """Every admin route as ops, finance and auditor (403 `forbidden` where the role may not)."""
    _call(case, fuzz_api, session, tokens[role])
