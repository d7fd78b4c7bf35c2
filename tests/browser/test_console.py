"""The admin console (GET /admin) in headless Chromium against the live local stack."""

from __future__ import annotations

import itertools
import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.e2e.conftest import LiveApi
from tests.stack import TEST_TENANT, Stack, unique

TOKEN_KEY = "fenxiao.admin.token"


def bind(api: LiveApi, sharer_token: str, friend_token: str) -> None:
    share = api.call("POST", "/v1/shares", sharer_token, json={"channel": "wechat"})
    assert share.status_code == 201, share.text
    scan = api.call("POST", "/v1/referrals/scan", friend_token, json={"code": share.json()["code"]})
    assert scan.json() == {"status": "bound"}, scan.text


def chain(api: LiveApi, *names: str) -> list[str]:
    """Users who each shared to the next one: the first is the top; returns their ids."""
    people = [api.login(unique(name)) for name in names]
    for (sharer_token, _), (friend_token, _) in itertools.pairwise(people):
        bind(api, sharer_token, friend_token)
    return [uid for _, uid in people]


def log_in(page: Page, username: str, *, limit: int | None = None, appid: str = TEST_TENANT) -> None:
    """Production has no default tenant: an operator names the mini-program they run."""
    page.goto("/admin" + (f"?limit={limit}" if limit else ""))
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(f"pw-{username}")
    if appid:
        page.locator("summary").click()
        page.get_by_test_id("login-appid").fill(appid)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("session-role")).to_have_text(username)
    expect(page.get_by_test_id("login")).to_be_hidden()


def open_user(page: Page, uid: str) -> None:
    page.get_by_test_id("tree-uid").fill(uid)
    page.get_by_test_id("tree-open").click()
    expect(page.get_by_test_id("node-id")).to_have_text(uid)


def child(page: Page, uid: str) -> Any:
    return page.locator(f'[data-testid="child"][data-uid="{uid}"]')


def expect_error(page: Page, code: str) -> None:
    message = page.get_by_test_id("message")
    expect(message).to_be_visible()
    expect(message).to_have_attribute("data-kind", "error")
    expect(page.get_by_test_id("message-code")).to_have_text(code)


def test_console_route_serves_the_page_with_its_policy(stack: Stack) -> None:
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        response = client.http.get("/admin")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert 'data-testid="login-form"' in response.body.decode()


def test_wrong_password_shows_the_error(page: Page) -> None:
    page.goto("/admin")
    page.get_by_test_id("login-username").fill("owner")
    page.get_by_test_id("login-password").fill("not-the-password")
    page.locator("summary").click()
    page.get_by_test_id("login-appid").fill(TEST_TENANT)
    page.get_by_test_id("login-submit").click()

    expect_error(page, "invalid_credentials")
    expect(page.get_by_test_id("login")).to_be_visible()
    expect(page.get_by_test_id("console")).to_be_hidden()


def test_owner_expands_a_two_level_team_and_follows_the_upline(page: Page, live_api: LiveApi) -> None:
    # Given a shared to b, and b to c
    a, b, c = chain(live_api, "a", "b", "c")
    log_in(page, "owner")

    # When the owner opens a and expands b
    open_user(page, a)
    expect(page.get_by_test_id("count-1")).to_have_text("1")
    expect(page.get_by_test_id("count-2")).to_have_text("1")
    expect(page.get_by_test_id("count-3")).to_have_text("0")
    expect(page.get_by_test_id("child")).to_have_count(1)
    child(page, b).get_by_test_id("child-toggle").click()

    # Then c shows under b, lazily loaded
    expect(child(page, b).locator(f'[data-testid="child"][data-uid="{c}"]')).to_be_visible()
    expect(child(page, b).get_by_test_id("child-toggle").first).to_have_attribute("aria-expanded", "true")

    # and opening c lists its upline, whose ids lead back up the tree
    child(page, c).get_by_test_id("child-open").click()
    expect(page.get_by_test_id("node-id")).to_have_text(c)
    expect(page.get_by_test_id("upline-link")).to_have_text([b, a])
    expect(page.get_by_test_id("no-children")).to_be_visible()
    page.get_by_test_id("upline-link").nth(1).click()
    expect(page.get_by_test_id("node-id")).to_have_text(a)
    expect(page).to_have_url(re.compile(f"#/users/{a}$"))


def test_more_loads_the_next_page_of_children(page: Page, live_api: LiveApi) -> None:
    # Given a promoter with three direct children and a console page size of 2
    top_token, top = live_api.login(unique("top"))
    kids = [live_api.login(unique(f"kid{i}")) for i in range(3)]
    for kid_token, _ in kids:
        bind(live_api, top_token, kid_token)
    log_in(page, "owner", limit=2)

    open_user(page, top)
    expect(page.get_by_test_id("child")).to_have_count(2)
    page.get_by_test_id("more").click()

    expect(page.get_by_test_id("child")).to_have_count(3)
    expect(page.get_by_test_id("more")).to_have_count(0)
    shown = page.get_by_test_id("child").evaluate_all("rows => rows.map(r => r.dataset.uid)")
    assert sorted(shown) == sorted(uid for _, uid in kids)


def test_a_move_that_closes_a_cycle_is_refused(page: Page, live_api: LiveApi) -> None:
    a, _, c = chain(live_api, "a", "b", "c")
    log_in(page, "ops")
    expect(page.get_by_test_id("job-seal_audit")).to_have_count(0)
    open_user(page, a)

    page.get_by_test_id("move-parent").fill(c)
    page.get_by_test_id("move-reason").fill("customer asked")
    page.get_by_test_id("move-submit").click()

    expect_error(page, "cycle")
    expect(page.get_by_test_id("node-id")).to_have_text(a)
    expect(page.get_by_test_id("upline-link")).to_have_count(0)


def test_a_move_needs_a_reason_and_reloads_the_node(page: Page, live_api: LiveApi) -> None:
    old, moved = chain(live_api, "old", "moved")
    new = chain(live_api, "new")[0]
    log_in(page, "owner")
    open_user(page, moved)
    expect(page.get_by_test_id("upline-link")).to_have_text([old])

    # Without a reason the browser does not send the form
    page.get_by_test_id("move-parent").fill(new)
    page.get_by_test_id("move-submit").click()
    expect(page.get_by_test_id("message")).to_be_hidden()
    expect(page.get_by_test_id("upline-link")).to_have_text([old])

    page.get_by_test_id("move-reason").fill("joined the wrong team")
    page.get_by_test_id("move-submit").click()

    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(page.get_by_test_id("upline-link")).to_have_text([new])
    expect(page.get_by_test_id("move-parent")).to_have_value("")


def test_owner_runs_a_job_and_finance_has_no_jobs(page: Page) -> None:
    log_in(page, "owner")
    page.get_by_test_id("job-seal_audit").click()
    expect(page.get_by_test_id("job-result")).to_contain_text('"job": "seal_audit"')
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login")).to_be_visible()

    log_in(page, "finance")

    expect(page.get_by_test_id("job-seal_audit")).to_have_count(0)
    expect(page.get_by_test_id("jobs")).to_be_hidden()


def test_finance_sees_the_tree_but_cannot_move(page: Page, live_api: LiveApi) -> None:
    a, b = chain(live_api, "a", "b")
    log_in(page, "finance")
    open_user(page, a)
    expect(child(page, b)).to_be_visible()
    expect(page.get_by_test_id("move")).to_be_hidden()


def test_an_invalid_token_sends_back_to_login(page: Page, live_api: LiveApi) -> None:
    head, payload, _signature = live_api.admin("owner").split(".")
    page.goto("/admin")
    page.evaluate("([key, token]) => sessionStorage.setItem(key, token)", [TOKEN_KEY, f"{head}.{payload}.{'A' * 43}"])
    page.reload()
    expect(page.get_by_test_id("session-role")).to_have_text("owner")  # the page trusts the payload...

    page.get_by_test_id("tree-uid").fill("u000000000000000")
    page.get_by_test_id("tree-open").click()

    expect_error(page, "invalid_token")  # ...the API does not
    expect(page.get_by_test_id("login")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


def test_names_are_shown_as_text_never_as_markup(page: Page, live_api: LiveApi) -> None:
    top_token, top = live_api.login(unique("top"))
    name = '<img src=x onerror="window.pwned=1">'
    response = live_api.call(
        "POST", "/v1/auth/login", json={"code": f"dev-{unique('x')}", "name": name, "appid": live_api.tenant}
    )
    bind(live_api, top_token, response.json()["token"])
    log_in(page, "owner")

    open_user(page, top)

    expect(page.get_by_test_id("child-name")).to_have_text(name)
    assert page.evaluate("window.pwned") is None


def test_finance_approves_and_rejects_withdrawals_and_ops_only_reads(page: Page, live_api: LiveApi) -> None:
    from chalicelib.entities import Principal, Role
    from chalicelib.services import logins, withdrawals
    from chalicelib.store import get_store
    from chalicelib.withdrawal import WithdrawalState
    from tests.integration.test_withdrawals import credit
    from tests.stack import OTHER_TENANT

    stack = live_api.stack  # the other tenant: its review queue holds only this test's withdrawals
    who = Principal(OTHER_TENANT, logins.login(f"dev-{unique('w')}", OTHER_TENANT).user.id, Role.USER)
    credit(stack, who, 3_000)
    first, _ = withdrawals.request(who, 1_000)
    second, _ = withdrawals.request(who, 1_500)

    log_in(page, "finance", appid=OTHER_TENANT)
    page.get_by_test_id("nav-withdrawals").click()
    page.get_by_test_id("wd-load").click()  # the review queue: requested, oldest first
    expect(page.get_by_test_id(f"wd-row-{first['id']}")).to_contain_text("10.00")
    page.get_by_test_id(f"wd-approve-{first['id']}").click()
    expect(page.get_by_test_id("message")).to_contain_text(first["id"])
    expect(page.get_by_test_id(f"wd-row-{first['id']}")).to_have_count(0)

    page.get_by_test_id(f"wd-reject-{second['id']}").click()  # no reason yet: refused in the page
    expect(page.get_by_test_id("message")).to_contain_text("reason")
    page.get_by_test_id(f"wd-reason-{second['id']}").fill("资料不全 <b>x</b>")
    page.get_by_test_id(f"wd-reject-{second['id']}").click()
    expect(page.get_by_test_id(f"wd-row-{second['id']}")).to_have_count(0)

    store = get_store().withdrawals
    assert store.get(OTHER_TENANT, first["id"]).state is WithdrawalState.APPROVED  # type: ignore[union-attr]
    rejected = store.get(OTHER_TENANT, second["id"])
    assert rejected is not None and rejected.state is WithdrawalState.REJECTED
    assert rejected.reason == "资料不全 <b>x</b>"

    page.get_by_test_id("wd-state").select_option("rejected")
    page.get_by_test_id("wd-load").click()
    expect(page.get_by_test_id(f"wd-row-{second['id']}")).to_be_visible()
    page.get_by_test_id("logout").click()

    log_in(page, "ops", appid=OTHER_TENANT)
    page.get_by_test_id("nav-withdrawals").click()
    page.get_by_test_id("wd-state").select_option("approved")
    page.get_by_test_id("wd-load").click()
    expect(page.get_by_test_id(f"wd-row-{first['id']}")).to_be_visible()
    expect(page.get_by_test_id(f"wd-approve-{first['id']}")).to_have_count(0)
    expect(page.get_by_test_id(f"wd-reject-{first['id']}")).to_have_count(0)
