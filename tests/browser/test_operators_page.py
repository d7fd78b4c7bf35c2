"""The console's operators page (owners only) and an operator's own password, in headless Chromium."""

from __future__ import annotations

import uuid

import requests
from playwright.sync_api import Page, expect

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Role
from chalicelib.store import get_store
from tests.browser.test_console import expect_error, log_in
from tests.e2e.conftest import LiveApi
from tests.stack import TEST_TENANT


def admin_login(api: LiveApi, username: str, password: str) -> int:
    response = api.call(
        "POST", "/v1/admin/auth/login", json={"username": username, "password": password, "appid": api.tenant}
    )
    return response.status_code


def log_in_as(page: Page, username: str, password: str, role: str) -> None:
    page.goto("/admin")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.locator("summary").click()
    page.get_by_test_id("login-appid").fill(TEST_TENANT)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("session-role")).to_have_text(role)


def test_an_owner_adds_an_operator_changes_its_role_and_disables_it(page: Page, live_api: LiveApi) -> None:
    username = f"clerk.{uuid.uuid4().hex[:8]}"
    log_in(page, "owner")

    # When the owner opens the operators page and adds a finance operator
    page.get_by_test_id("nav-operators").click()
    expect(page.get_by_test_id("operators")).to_be_visible()
    expect(page.get_by_test_id("console")).to_be_hidden()
    expect(page.get_by_test_id("op-row-owner")).to_be_visible()
    page.get_by_test_id("op-username").fill(username)
    page.get_by_test_id("op-password").fill("first-password-1")
    page.get_by_test_id("op-role").select_option("finance")
    page.get_by_test_id("op-create").click()

    # Then it is listed, enabled, and can log in
    row = page.get_by_test_id(f"op-row-{username}")
    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(row).to_be_visible()
    expect(page.get_by_test_id(f"op-role-now-{username}")).to_contain_text("finance")
    expect(page.get_by_test_id(f"op-state-{username}")).to_have_attribute("data-disabled", "false")
    assert admin_login(live_api, username, "first-password-1") == 200
    expect(page.get_by_test_id("op-password")).to_have_value("")

    # When the owner makes it an auditor, then disables it
    page.get_by_test_id(f"op-role-{username}").select_option("auditor")
    page.get_by_test_id(f"op-setrole-{username}").click()
    expect(page.get_by_test_id(f"op-role-now-{username}")).to_contain_text("auditor")
    page.get_by_test_id(f"op-toggle-{username}").click()

    # Then the page and the store agree, and the operator can no longer log in
    expect(page.get_by_test_id(f"op-state-{username}")).to_have_attribute("data-disabled", "true")
    stored = get_store().admins.get(TEST_TENANT, username)
    assert stored is not None and (stored.role, stored.disabled) == (Role.AUDITOR, True)
    assert admin_login(live_api, username, "first-password-1") == 401

    # and a second operator with the same name is refused with the API's code
    page.get_by_test_id("op-username").fill(username)
    page.get_by_test_id("op-password").fill("second-password-2")
    page.get_by_test_id("op-create").click()
    expect_error(page, "operator_exists")


def test_only_owners_see_the_operators_page(page: Page) -> None:
    for role in ("ops", "finance", "auditor"):
        log_in(page, role)
        expect(page.get_by_test_id("nav")).to_be_visible()
        expect(page.get_by_test_id("nav-operators")).to_be_hidden()
        page.goto("/admin#/operators")  # typing the address does not open it either
        expect(page.get_by_test_id("console")).to_be_visible()
        expect(page.get_by_test_id("operators")).to_be_hidden()
        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("login")).to_be_visible()


def test_an_operator_changes_their_password_and_stays_logged_in(page: Page, live_api: LiveApi) -> None:
    username = f"self.{uuid.uuid4().hex[:8]}"
    old = "first-password-1"
    get_store().admins.put(Admin(TEST_TENANT, username, hash_password(old), Role.OPS), utcnow())
    log_in_as(page, username, old, "ops")
    old_token = page.evaluate("sessionStorage.getItem('fenxiao.admin.token')")

    page.get_by_test_id("pw-current").fill("not-the-password")
    page.get_by_test_id("pw-new").fill("chosen-by-me-123")
    page.get_by_test_id("pw-submit").click()
    expect_error(page, "wrong_password")

    page.get_by_test_id("pw-current").fill(old)
    page.get_by_test_id("pw-new").fill("chosen-by-me-123")
    page.get_by_test_id("pw-submit").click()

    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    new_token = page.evaluate("sessionStorage.getItem('fenxiao.admin.token')")
    assert new_token != old_token
    tree = f"{live_api.url}/v1/admin/users/u000000000000000/tree"
    headers = {"X-Appid": TEST_TENANT}
    assert (
        requests.get(tree, headers={**headers, "Authorization": f"Bearer {old_token}"}, timeout=30).status_code == 401
    )
    assert (
        requests.get(tree, headers={**headers, "Authorization": f"Bearer {new_token}"}, timeout=30).status_code != 401
    )
    assert admin_login(live_api, username, "chosen-by-me-123") == 200
    assert admin_login(live_api, username, old) == 401
    expect(page.get_by_test_id("session-role")).to_have_text("ops")  # still logged in
