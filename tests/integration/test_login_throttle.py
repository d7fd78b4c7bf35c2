"""Login throttling: failed operator logins per username and per address, mini-program logins
per address; counted in DynamoDB so every Lambda instance sees the same count."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from chalicelib import throttle
from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Role
from chalicelib.errors import NotAuthenticated, Throttled
from chalicelib.services import logins
from chalicelib.store import get_store
from tests.stack import TEST_TENANT, Stack, unique

pytestmark = pytest.mark.integration
PASSWORD = "pw-throttle-123"


@pytest.fixture(autouse=True)
def one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt of a test in one window (a real clock could cross a window's end mid-test)."""
    fixed = utcnow()
    monkeypatch.setattr(logins, "utcnow", lambda: fixed)


def operator() -> str:
    username = unique("th").replace("-", "")
    get_store().admins.put(Admin(TEST_TENANT, username, hash_password(PASSWORD), Role.OPS), utcnow())
    return username


def test_ten_failed_logins_lock_the_username_even_for_the_right_password(stack: Stack) -> None:
    from app import app

    client = Client(app)
    username = operator()

    def attempt(password: str) -> tuple[int, dict[str, str], dict[str, object]]:
        response = client.http.post(
            "/v1/admin/auth/login",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"username": username, "password": password, "appid": TEST_TENANT}),
        )
        return response.status_code, dict(response.headers), json.loads(response.body)

    for _ in range(throttle.ADMIN_PER_USER.attempts):
        assert attempt("wrong")[0] == 401
    status, headers, body = attempt(PASSWORD)
    assert status == 429 and body["error"]["code"] == "too_many_attempts"  # type: ignore[index]
    assert 1 <= int(headers["Retry-After"]) <= throttle.ADMIN_PER_USER.window_seconds
    # another operator is not affected
    assert (
        client.http.post(
            "/v1/admin/auth/login",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"username": "owner", "password": "pw-owner", "appid": TEST_TENANT}),
        ).status_code
        == 200
    )


def test_failed_logins_from_one_address_are_limited_across_usernames(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle, "ADMIN_PER_IP", throttle.Limit("admin-ip-test", attempts=5, window_seconds=900))
    address = f"203.0.113.{unique('ip')[-2:]}"
    for i in range(5):
        with pytest.raises(NotAuthenticated):
            logins.admin_login(f"nobody{i}", "wrong", TEST_TENANT, address)
    with pytest.raises(Throttled):
        logins.admin_login(operator(), PASSWORD, TEST_TENANT, address)
    assert logins.admin_login(operator(), PASSWORD, TEST_TENANT, "198.51.100.1")  # another address


def test_mini_program_logins_from_one_address_are_limited(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "LOGIN_PER_IP", throttle.Limit("login-ip-test", attempts=3, window_seconds=60))
    address = f"192.0.2.{unique('ip')[-2:]}"
    for _ in range(3):
        logins.login(f"dev-{unique('t')}", TEST_TENANT, source_ip=address)
    with pytest.raises(Throttled) as refused:
        logins.login(f"dev-{unique('t')}", TEST_TENANT, source_ip=address)
    assert refused.value.code == "too_many_attempts" and 1 <= refused.value.retry_after <= 60
