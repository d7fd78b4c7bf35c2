"""An operator's token stops working at once when the operator is disabled, demoted or reset."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from chalice.test import Client

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Role
from chalicelib.store import get_store
from devtools import admin as admin_cli
from tests.stack import TEST_TENANT, Stack, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    from app import app

    return Client(app)


def operator(role: Role) -> str:
    username = unique("op").replace("-", "")
    get_store().admins.put(Admin(TEST_TENANT, username, hash_password("pw-op-123456"), role), utcnow())
    return username


def token_of(client: Client, username: str) -> str:
    response = client.http.post(
        "/v1/admin/auth/login",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": username, "password": "pw-op-123456", "appid": TEST_TENANT}),
    )
    assert response.status_code == 200, response.body
    return str(json.loads(response.body)["token"])


def list_withdrawals(client: Client, token: str) -> tuple[int, str]:
    response = client.http.get("/v1/admin/withdrawals?state=requested", headers={"Authorization": f"Bearer {token}"})
    body = json.loads(response.body)
    return response.status_code, body.get("error", {}).get("code", "")


def test_a_disabled_operators_token_stops_on_its_next_request(client: Client) -> None:
    username = operator(Role.FINANCE)
    token = token_of(client, username)
    assert list_withdrawals(client, token)[0] == 200
    assert admin_cli.set_disabled(TEST_TENANT, username, True)
    assert list_withdrawals(client, token) == (401, "token_revoked")
    # enabling again does not revive the old token: the operator logs in again
    assert admin_cli.set_disabled(TEST_TENANT, username, False)
    assert list_withdrawals(client, token) == (401, "token_revoked")
    assert list_withdrawals(client, token_of(client, username))[0] == 200


def test_a_demoted_operators_token_stops_on_its_next_request(client: Client) -> None:
    username = operator(Role.FINANCE)
    token = token_of(client, username)
    stored = get_store().admins.get(TEST_TENANT, username)
    assert stored is not None
    get_store().admins.put(replace(stored, role=Role.AUDITOR), utcnow())
    assert list_withdrawals(client, token) == (401, "token_revoked")


def test_a_reset_operators_old_token_stops(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    username = operator(Role.OWNER)
    token = token_of(client, username)
    monkeypatch.setenv("ADMIN_PASSWORD", "pw-op-123456")
    assert admin_cli.add_admin(TEST_TENANT, username, Role.OWNER, reset=True)
    assert list_withdrawals(client, token) == (401, "token_revoked")
    assert list_withdrawals(client, token_of(client, username))[0] == 200
