"""The console's pages in headless Chromium: navigation per role, language, and each page's work.

Every test here runs in a mini-program of its own (`tenant`), so its lists, audit trail and review
queue hold only what these tests put there.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Principal, Role, Tenant
from chalicelib.services import logins, withdrawals
from chalicelib.store import get_store
from chalicelib.withdrawal import WithdrawalState
from tests.browser.conftest import SCREENSHOTS, save_failure_screenshot
from tests.browser.test_console import expect_error, log_in
from tests.e2e.conftest import LiveApi, eventually
from tests.integration.test_withdrawals import credit
from tests.stack import OPEN_RULES, unique

ALL_PAGES = [
    "console",
    "dashboard",
    "promoters",
    "orders",
    "withdrawals",
    "payout-runs",
    "catalog",
    "plans",
    "settings",
    "parked",
    "audit",
    "exports",
    "operators",
]
# The roles each page's routes accept (chalicelib/api/*.py; x-roles in /v1/openapi.json).
VISIBLE = {
    "owner": ALL_PAGES,
    "ops": [
        "console",
        "dashboard",
        "promoters",
        "orders",
        "withdrawals",
        "payout-runs",
        "catalog",
        "plans",
        "settings",
        "parked",
    ],
    "finance": [
        "console",
        "dashboard",
        "promoters",
        "orders",
        "withdrawals",
        "payout-runs",
        "catalog",
        "plans",
        "settings",
        "exports",
    ],
    "auditor": [
        "console",
        "dashboard",
        "promoters",
        "orders",
        "withdrawals",
        "payout-runs",
        "catalog",
        "plans",
        "settings",
        "audit",
        "exports",
    ],
}
# The route each page reads first: whoever may call it sees the page.
READS = {
    "dashboard": "/v1/admin/reports/daily",
    "promoters": "/v1/admin/promoters",
    "orders": "/v1/admin/orders",
    "withdrawals": "/v1/admin/withdrawals",
    "payout-runs": "/v1/admin/payout-runs",
    "catalog": "/v1/admin/products",
    "plans": "/v1/admin/plans",
    "settings": "/v1/admin/settings/withdrawals",
    "parked": "/v1/admin/parked",
    "audit": "/v1/admin/audit",
    "exports": "/v1/admin/exports",
    "operators": "/v1/admin/operators",
}
# What shows that a page loaded its data (the attribute is set only after a successful answer).
LOADED = {
    "dashboard": ["dash-kpis", "src-rows", "funnel"],
    "promoters": ["pm-rows"],
    "orders": ["ord-rows"],
    "withdrawals": ["wd-rows"],
    "payout-runs": ["runs-rows"],
    "catalog": ["products-rows", "coupons-rows"],
    "plans": ["plans-rows"],
    "settings": ["settings-fields"],
    "parked": ["parked-rows"],
    "audit": ["audit-rows"],
    "exports": ["exports-rows"],
    "operators": ["op-rows"],
}


@pytest.fixture(scope="module")
def tenant(live_api: LiveApi) -> str:
    """A mini-program for this module only, with one operator per role and open withdrawal rules."""
    return new_tenant()


def new_tenant() -> str:
    tenant_id = f"wxpages{uuid.uuid4().hex[:10]}"
    store = get_store()
    store.tenants.put(Tenant(tenant_id, "Console pages"), utcnow())
    for role in (Role.OWNER, Role.OPS, Role.FINANCE, Role.AUDITOR):
        store.admins.put(Admin(tenant_id, role.value, hash_password("pw-" + role.value), role), utcnow())
    withdrawals.set_rules(Principal(tenant_id, "owner", Role.OWNER), OPEN_RULES)
    return tenant_id


def promoter_with(tenant: str, amount_fen: int, live_api: LiveApi) -> Principal:
    who = Principal(tenant, logins.login(f"dev-{unique('p')}", tenant).user.id, Role.USER)
    credit(live_api.stack, who, amount_fen)
    return who


def nav_ids(page: Page) -> list[str]:
    ids: list[str] = (
        page.get_by_test_id("nav")
        .locator("button")
        .evaluate_all("buttons => buttons.map(b => b.dataset.testid.slice(4))")
    )
    return ids


def open_page(page: Page, name: str) -> None:
    page.get_by_test_id(f"nav-{name}").click()
    expect(page.get_by_test_id(name)).to_be_visible()
    for marker in LOADED.get(name, []):
        expect(page.get_by_test_id(marker)).to_have_attribute("data-loaded", "true")


def test_the_role_table_matches_the_roles_the_api_documents() -> None:
    from chalicelib.api.openapi import ROUTES

    for name, path in READS.items():
        roles = {r.value for r in ROUTES[("GET", path)].roles} or set(VISIBLE)
        assert {role for role, pages in VISIBLE.items() if name in pages} == roles, name


@pytest.mark.parametrize("role", ["owner", "ops", "finance", "auditor"])
def test_each_role_sees_and_loads_only_its_pages(page: Page, tenant: str, role: str) -> None:
    log_in(page, role, appid=tenant)

    # The navigation lists exactly the role's pages, and each one loads without an error
    expect(page.get_by_test_id("nav")).to_be_visible()
    assert nav_ids(page) == VISIBLE[role]
    for name in VISIBLE[role]:
        open_page(page, name)
        expect(page.get_by_test_id("message")).to_be_hidden()
        for other in ALL_PAGES:
            if other != name:
                expect(page.get_by_test_id(other)).to_be_hidden()

    # Typing the address of another role's page shows the home page instead
    for name in sorted(set(ALL_PAGES) - set(VISIBLE[role])):
        page.goto(f"/admin#/{name}")
        expect(page.get_by_test_id("console")).to_be_visible()
        expect(page.get_by_test_id(name)).to_be_hidden()

    # and the actions a role may not take are not offered
    open_page(page, "withdrawals")
    shown_if(page.get_by_test_id("wd-bulk"), role in ("owner", "finance"))
    open_page(page, "catalog")
    shown_if(page.get_by_test_id("product-form"), role in ("owner", "ops"))
    shown_if(page.get_by_test_id("coupon-form"), role in ("owner", "ops"))
    open_page(page, "plans")
    shown_if(page.get_by_test_id("plan-editor"), role == "owner")
    open_page(page, "settings")
    shown_if(page.get_by_test_id("settings-save"), role in ("owner", "finance"))
    field = page.get_by_test_id("settings-min_fen")
    (expect(field).to_be_enabled if role in ("owner", "finance") else expect(field).to_be_disabled)()
    if "parked" in VISIBLE[role]:
        open_page(page, "parked")
        shown_if(page.get_by_test_id("parked-redrive"), role == "owner")


def shown_if(locator: Any, shown: bool) -> None:
    if shown:
        expect(locator).to_be_visible()
    else:
        expect(locator).to_be_hidden()


def test_chinese_by_default_english_on_request_and_remembered(page: Page, tenant: str) -> None:
    untranslated = "[...document.querySelectorAll('[data-i18n]')].filter(e => e.textContent === e.dataset.i18n).length"
    log_in(page, "owner", appid=tenant)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_test_id("nav-withdrawals")).to_have_text("提现审核")
    assert page.evaluate(untranslated) == 0

    page.get_by_test_id("lang-toggle").click()

    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_test_id("nav-withdrawals")).to_have_text("Withdrawals")
    expect(page.get_by_test_id("login-submit")).to_have_text("Log in")
    assert page.evaluate(untranslated) == 0
    page.reload()
    expect(page.get_by_test_id("nav-audit")).to_have_text("Audit trail")  # remembered in localStorage
    open_page(page, "settings")
    expect(page.get_by_text("Minimum (yuan)")).to_be_visible()  # labels built by script follow too

    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_text("最低提现（元）")).to_be_visible()
    assert page.evaluate("localStorage.getItem('fenxiao.admin.lang')") == "zh"


def test_the_audit_viewer_lists_filters_and_verifies(page: Page, tenant: str) -> None:
    # Given an audited change of this mini-program's withdrawal settings (the `tenant` fixture)
    log_in(page, "auditor", appid=tenant)
    open_page(page, "audit")
    expect(page.locator('[data-testid="audit-row"][data-action="settings.withdrawals"]').first).to_be_visible()

    # When the auditor filters by an entity that has no records
    page.get_by_test_id("audit-entity").fill("withdrawal:nothing-here")
    page.get_by_test_id("audit-load").click()
    expect(page.get_by_test_id("audit-empty")).to_be_visible()

    # and verifies the trail of today
    page.get_by_test_id("audit-verify").click()

    # Then the chain checks out
    result = page.get_by_test_id("audit-verify-result")
    expect(result).to_have_attribute("data-ok", "true")
    assert int(result.get_attribute("data-checked") or "0") >= 1
    expect(result).to_contain_text("校验通过")


def test_an_invalid_audit_range_shows_the_servers_error(page: Page, tenant: str) -> None:
    log_in(page, "owner", appid=tenant)
    open_page(page, "audit")
    page.get_by_test_id("audit-from").fill("2026-03-10")
    page.get_by_test_id("audit-to").fill("2026-03-01")
    page.get_by_test_id("audit-verify").click()
    expect_error(page, "invalid_range")
    expect(page.get_by_test_id("audit-verify-result")).to_be_hidden()


def test_bulk_approve_and_reject_call_each_withdrawal_with_per_row_results(
    page: Page, tenant: str, live_api: LiveApi
) -> None:
    who = promoter_with(tenant, 10_000, live_api)
    first, _ = withdrawals.request(who, 1_000)
    second, _ = withdrawals.request(who, 1_500)
    third, _ = withdrawals.request(who, 500)
    gone, _ = withdrawals.request(who, 700)
    finance = Principal(tenant, "finance", Role.FINANCE)
    log_in(page, "finance", appid=tenant)
    open_page(page, "withdrawals")
    expect(page.get_by_test_id(f"wd-row-{gone['id']}")).to_be_visible()

    # When finance selects three rows, one of which someone else rejects meanwhile, and approves them
    for w in (first, second, gone):
        page.get_by_test_id(f"wd-select-{w['id']}").check()
    withdrawals.reject(finance, gone["id"], "handled elsewhere")
    page.get_by_test_id("wd-bulk-approve").click()

    # Then each row shows its own result, with progress, and the store agrees
    expect(page.get_by_test_id("wd-bulk-status")).to_have_text("3 / 3")
    for w in (first, second):
        expect(page.get_by_test_id(f"wd-result-{w['id']}")).to_have_attribute("data-result", "ok")
        expect(page.get_by_test_id(f"wd-select-{w['id']}")).to_be_disabled()
    failed = page.get_by_test_id(f"wd-result-{gone['id']}")
    expect(failed).to_have_attribute("data-result", "error")
    expect(failed).to_contain_text("invalid_state")
    expect_error(page, "partly_failed")
    store = get_store().withdrawals
    for w in (first, second):
        assert store.get(tenant, w["id"]).state is WithdrawalState.APPROVED  # type: ignore[union-attr]

    # When finance bulk-rejects the third: a reason is required first
    page.get_by_test_id(f"wd-select-{third['id']}").check()
    page.get_by_test_id("wd-bulk-reject").click()
    expect_error(page, "reason_required")
    page.get_by_test_id("wd-bulk-reason").fill("资料不全")
    page.get_by_test_id("wd-bulk-reject").click()

    expect(page.get_by_test_id(f"wd-result-{third['id']}")).to_have_attribute("data-result", "ok")
    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    rejected = store.get(tenant, third["id"])
    assert rejected is not None and rejected.state is WithdrawalState.REJECTED
    assert rejected.reason == "资料不全"


def test_payout_run_and_its_report(page: Page, live_api: LiveApi) -> None:
    tenant = new_tenant()  # its only approved withdrawal is this test's
    who = promoter_with(tenant, 2_000, live_api)
    approved, _ = withdrawals.request(who, 1_200)
    withdrawals.approve(Principal(tenant, "finance", Role.FINANCE), approved["id"])
    log_in(page, "owner", appid=tenant)
    page.get_by_test_id("job-payout_run").click()
    expect(page.get_by_test_id("job-result")).to_contain_text('"job": "payout_run"')
    # the run enqueued the withdrawal; the event runner's queue worker sends it: open the report after
    eventually(lambda: _state(tenant, approved["id"]) is not WithdrawalState.APPROVED)

    open_page(page, "payout-runs")
    page.get_by_test_id("runs-rows").locator("button").first.click()

    expect(page.get_by_test_id("run-report")).to_be_visible()
    expect(page.get_by_test_id("run-report-states").locator("tr")).to_have_count(1)
    expect(page.get_by_test_id("run-report-states")).to_contain_text("12.00")
    expect(page.get_by_test_id("run-report-failures")).to_contain_text("没有失败")


def _state(tenant: str, withdrawal_id: str) -> WithdrawalState | None:
    found = get_store().withdrawals.get(tenant, withdrawal_id)
    return found.state if found is not None else None


def test_plans_are_created_from_json_with_the_servers_validation_and_activated(page: Page, tenant: str) -> None:
    log_in(page, "owner", appid=tenant)
    open_page(page, "plans")
    editor = page.get_by_test_id("plan-json")

    editor.fill("{not json")
    page.get_by_test_id("plan-create").click()
    expect_error(page, "invalid_json")

    editor.fill('{"rates_bps": [1000, 500, 200], "cap_bps": 1000}')  # can pay 1700 bps above a 1000 cap
    page.get_by_test_id("plan-create").click()
    expect_error(page, "invalid_plan")
    expect(page.get_by_test_id("plan-errors")).to_contain_text("above its cap")

    editor.fill('{"rates_bps": [1000, 500, 200], "cap_bps": 2000}')
    page.get_by_test_id("plan-create").click()
    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(page.get_by_test_id("plan-errors")).to_be_hidden()
    row = page.locator('[data-testid^="plan-row-"]').first
    expect(row).to_have_attribute("data-active", "false")
    version = (row.get_attribute("data-testid") or "").removeprefix("plan-row-")

    page.get_by_test_id(f"plan-open-{version}").click()
    expect(page.get_by_test_id("plan-detail")).to_contain_text('"cap_bps": 2000')
    page.get_by_test_id(f"plan-activate-{version}").click()

    expect(page.get_by_test_id(f"plan-row-{version}")).to_have_attribute("data-active", "true")
    assert get_store().plans.active_version(tenant) == int(version)


def test_settings_form_validates_then_saves(page: Page, tenant: str) -> None:
    log_in(page, "finance", appid=tenant)
    open_page(page, "settings")
    expect(page.get_by_test_id("settings-min_fen")).to_have_value("1.00")

    page.get_by_test_id("settings-min_fen").fill("abc")
    page.get_by_test_id("settings-count_per_day").fill("5000")
    page.get_by_test_id("settings-save").click()
    expect_error(page, "invalid_rules")
    expect(page.get_by_test_id("settings-error-min_fen")).to_have_text("须为金额，最多两位小数")
    expect(page.get_by_test_id("settings-error-count_per_day")).to_have_text("须在 1 到 1000 之间")
    assert withdrawals.rules_of(tenant).min_fen == OPEN_RULES["min_fen"]

    page.get_by_test_id("settings-min_fen").fill("2.50")
    page.get_by_test_id("settings-count_per_day").fill("999")
    page.get_by_test_id("settings-save").click()

    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(page.get_by_test_id("settings-error-min_fen")).to_have_text("")
    rules = withdrawals.rules_of(tenant)
    assert (rules.min_fen, rules.count_per_day) == (250, 999)


def test_products_are_created_and_edited_and_coupons_created(page: Page, tenant: str) -> None:
    product = f"p-{uuid.uuid4().hex[:8]}"
    log_in(page, "ops", appid=tenant)
    open_page(page, "catalog")

    page.get_by_test_id("product-id").fill(product)
    page.get_by_test_id("product-name").fill("口红")
    page.get_by_test_id("product-price").fill("12.x")
    page.get_by_test_id("product-save").click()
    expect_error(page, "invalid_price")
    page.get_by_test_id("product-price").fill("12.5")
    page.get_by_test_id("product-save").click()
    expect(page.get_by_test_id(f"product-row-{product}")).to_contain_text("12.50")

    page.get_by_test_id(f"product-edit-{product}").click()
    expect(page.get_by_test_id("product-id")).to_have_attribute("readonly", "")
    page.get_by_test_id("product-price").fill("13")
    page.get_by_test_id("product-save").click()
    expect(page.get_by_test_id(f"product-row-{product}")).to_contain_text("13.00")
    stored = get_store().products.get(tenant, product)
    assert stored is not None and (stored.name, stored.price_fen) == ("口红", 1300)

    coupon = f"c-{uuid.uuid4().hex[:8]}"
    page.get_by_test_id("coupon-id").fill(coupon)
    page.get_by_test_id("coupon-name").fill("满十减五")
    page.get_by_test_id("coupon-threshold").fill("10")
    page.get_by_test_id("coupon-amount").fill("5")
    page.get_by_test_id("coupon-from").fill("2030-01-01T00:00")
    page.get_by_test_id("coupon-until").fill("2029-01-01T00:00")  # ends before it starts
    page.get_by_test_id("coupon-save").click()
    expect_error(page, "invalid_coupon")
    page.get_by_test_id("coupon-until").fill("2030-02-01T00:00")
    page.get_by_test_id("coupon-products").fill(product)
    page.get_by_test_id("coupon-save").click()
    expect(page.get_by_test_id(f"coupon-row-{coupon}")).to_contain_text("5.00")
    template = get_store().coupons.get(tenant, coupon)
    assert template is not None and (template.amount_fen, template.threshold_fen) == (500, 1000)


def test_parked_page_shows_waiting_counts_and_redrives(page: Page, tenant: str) -> None:
    log_in(page, "owner", appid=tenant)
    open_page(page, "parked")
    expect(page.get_by_test_id("parked-waiting")).to_contain_text("0")
    expect(page.get_by_test_id("parked-empty")).to_be_visible()

    page.get_by_test_id("parked-redrive").click()

    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(page.get_by_test_id("message-text")).to_contain_text("成功 0")


def test_a_failure_screenshot_is_written_under_build(page: Page, tmp_path: Path) -> None:
    page.goto("/admin")
    assert SCREENSHOTS.parts[-2:] == ("build", "screenshots")
    path = save_failure_screenshot(page, "tests/browser/test_x.py::test_y[owner]", tmp_path / "shots")
    assert path == tmp_path / "shots" / "tests_browser_test_x.py_test_y_owner.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
