"""The console's dashboard and exports pages in headless Chromium against the live local stack.

The dashboard test seeds one day of a fresh mini-program through the services (shares, scans,
paid orders); the background event runner delivers the streams that keep the report counters,
and the page must show the day's numbers, this month's, and the funnel's. The exports tests ask
for a file from the page and download it, and watch a running export's progress move.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.services import catalog, logins, orders, plans, referrals, reports, shares, withdrawals
from chalicelib.store import get_store
from chalicelib.store.exports import Checkpoint, Export
from tests.browser.test_console import log_in
from tests.browser.test_console_pages import new_tenant, promoter_with
from tests.e2e.conftest import LiveApi, eventually
from tests.stack import unique

ROLES = ["owner", "ops", "finance", "auditor"]
EXPORTERS = ["owner", "finance", "auditor"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "dashboard.png"


def local_today() -> str:
    return utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the tenants' timezone


def user(tenant: str) -> Principal:
    return Principal(tenant, logins.login(f"dev-{unique('u')}", tenant).user.id, Role.USER)


def paid_order(buyer: Principal, lines: list[tuple[str, int]], code: str | None) -> str:
    order = orders.place(buyer, lines, code, None)
    orders.sandbox_pay_success(buyer, order.id)
    return order.id


def seed_day(tenant: str) -> dict[str, Any]:
    """Today in `tenant`: a promoter's share scanned three times (two bindings, one scan by a user
    already bound), two paid orders of one buyer (one first order), 123.45 + 2 × 5.00 yuan."""
    owner = Principal(tenant, "owner", Role.OWNER)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 2000})["version"])
    catalog.create_product(Principal(tenant, "ops", Role.OPS), "lipstick", "口红", 12_345)
    catalog.create_product(Principal(tenant, "ops", Role.OPS), "mask", "面膜", 500)
    sharer, buyer, friend = user(tenant), user(tenant), user(tenant)
    code = shares.create(sharer, "lipstick", "moments").code
    referrals.scan(buyer, code)
    referrals.scan(friend, code)
    referrals.scan(buyer, code)  # already bound: a scan that binds nobody
    ids = [paid_order(buyer, [("lipstick", 1)], code), paid_order(buyer, [("mask", 2)], None)]
    return {"owner": owner, "sharer": sharer, "orders": ids}


@pytest.fixture(scope="module")
def seeded(live_api: LiveApi) -> dict[str, Any]:
    """A mini-program with one seeded day, once its counters (streams included) are all in."""
    tenant = new_tenant()
    seed = seed_day(tenant)
    today = local_today()

    def counted() -> bool:
        day = reports.daily(seed["owner"], today, today)["days"][0]
        funnel = reports.funnel(seed["owner"], today, today)
        return day["orders"] == 2 and day["commission_fen"]["1"] > 0 and funnel["bindings"] == 2

    eventually(counted, timeout=60)
    return {"tenant": tenant, "today": today, **seed}


def open_page(page: Page, name: str, *loaded: str) -> None:
    page.get_by_test_id(f"nav-{name}").click()
    expect(page.get_by_test_id(name)).to_be_visible()
    for marker in loaded:
        expect(page.get_by_test_id(marker)).to_have_attribute("data-loaded", "true")


def nav_ids(page: Page) -> list[str]:
    ids: list[str] = (
        page.get_by_test_id("nav")
        .locator("button")
        .evaluate_all("buttons => buttons.map(b => b.dataset.testid.slice(4))")
    )
    return ids


# --- who sees what ------------------------------------------------------------------------------


def test_the_pages_roles_are_the_roles_their_routes_accept() -> None:
    from chalicelib.api.openapi import ROUTES

    for path in ("/v1/admin/reports/daily", "/v1/admin/reports/sources", "/v1/admin/reports/funnel"):
        assert ROUTES[("GET", path)].roles == (), path  # any operator: everyone gets the dashboard
    for method, path in (("GET", "/v1/admin/exports"), ("POST", "/v1/admin/exports")):
        assert sorted(r.value for r in ROUTES[(method, path)].roles) == sorted(EXPORTERS)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_gets_the_dashboard_and_only_readers_get_exports(
    page: Page, seeded: dict[str, Any], role: str
) -> None:
    log_in(page, role, appid=seeded["tenant"])

    assert "dashboard" in nav_ids(page)
    assert ("exports" in nav_ids(page)) == (role in EXPORTERS)
    open_page(page, "dashboard", "dash-kpis", "src-rows", "funnel")
    expect(page.get_by_test_id("message")).to_be_hidden()
    expect(page.get_by_test_id("kpi-orders-today")).to_have_text("2")

    page.goto("/admin#/exports")
    if role in EXPORTERS:
        expect(page.get_by_test_id("exports")).to_be_visible()
        expect(page.get_by_test_id("exports-rows")).to_have_attribute("data-loaded", "true")
    else:  # typing the address shows the home page instead
        expect(page.get_by_test_id("console")).to_be_visible()
        expect(page.get_by_test_id("exports")).to_be_hidden()


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_shows_the_days_orders_sales_commission_and_funnel(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "auditor", appid=seeded["tenant"])
    open_page(page, "dashboard", "dash-kpis", "src-rows", "funnel")

    # Today and this month (the mini-program is new: the month is this day)
    expect(page.get_by_test_id("dash-today")).to_have_text(seeded["today"])
    for span in ("today", "month"):
        expect(page.get_by_test_id(f"kpi-orders-{span}")).to_have_text("2")
        expect(page.get_by_test_id(f"kpi-sales-{span}")).to_have_text("133.45")  # 12,345 + 2 × 500 fen
        # level 1 earns 10 % of each order, rounded down: 1,234 + 100 fen; nobody above the sharer
        expect(page.get_by_test_id(f"kpi-commission-1-{span}")).to_have_text("13.34")
        expect(page.get_by_test_id(f"kpi-commission-2-{span}")).to_have_text("0.00")
        expect(page.get_by_test_id(f"kpi-commission-{span}")).to_have_text("13.34")
    expect(page.get_by_test_id("kpi-pending-count")).to_have_text("0")

    # The funnel: three scans, two bindings, one buyer's first order
    expect(page.get_by_test_id("funnel-scans")).to_have_text("3")
    expect(page.get_by_test_id("funnel-bindings")).to_have_text("2")
    expect(page.get_by_test_id("funnel-first_orders")).to_have_text("1")
    expect(page.get_by_test_id("funnel-bind-rate")).to_contain_text("66.6%")
    expect(page.get_by_test_id("funnel-order-rate")).to_contain_text("50.0%")

    # Sources by channel: the shared order came from moments, the other was bought directly
    rows = page.get_by_test_id("src-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-key", "moments")
    expect(rows.nth(0)).to_contain_text("123.45")
    expect(rows.nth(1)).to_contain_text("直接购买")
    expect(rows.nth(1)).to_contain_text("10.00")

    # by product, with the products' names
    page.get_by_test_id("src-by").select_option("product")
    expect(rows.first).to_contain_text("口红")
    expect(page.get_by_test_id("src-row").nth(1)).to_contain_text("面膜")

    # and the charts were drawn (ECharts paints into a canvas per chart)
    for chart in ("dash-trend", "src-chart", "funnel-chart"):
        expect(page.get_by_test_id(chart).locator("canvas")).to_have_count(1)


def test_payouts_pending_sum_the_approved_withdrawals(page: Page, live_api: LiveApi) -> None:
    tenant = new_tenant()
    finance = Principal(tenant, "finance", Role.FINANCE)
    who = promoter_with(tenant, 5_000, live_api)
    for amount in (1_200, 345):
        approved, _ = withdrawals.request(who, amount)
        withdrawals.approve(finance, approved["id"])
    withdrawals.request(who, 999)  # requested, not approved: not pending a payout yet

    log_in(page, "ops", appid=tenant)
    open_page(page, "dashboard", "dash-kpis")

    expect(page.get_by_test_id("kpi-pending-amount")).to_have_text("15.45")
    expect(page.get_by_test_id("kpi-pending-count")).to_have_text("2")


def test_the_dashboard_follows_the_language_switch(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "owner", appid=seeded["tenant"])
    open_page(page, "dashboard", "dash-kpis")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("nav-dashboard")).to_have_text("Dashboard")
    expect(page.get_by_test_id("src-row").nth(1)).to_contain_text("Direct")
    assert (
        page.evaluate(
            "[...document.querySelectorAll('[data-i18n]')].filter(e => e.textContent === e.dataset.i18n).length"
        )
        == 0
    )
    page.get_by_test_id("lang-toggle").click()


# --- exports ------------------------------------------------------------------------------------


def test_an_export_asked_for_on_the_page_is_done_and_downloads(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "finance", appid=seeded["tenant"])
    open_page(page, "exports", "exports-rows")

    # When finance asks for today's orders as CSV
    page.get_by_test_id("export-kind").select_option("orders")
    page.get_by_test_id("export-format").select_option("csv")
    page.get_by_test_id("export-from").fill(seeded["today"])
    page.get_by_test_id("export-to").fill(seeded["today"])
    page.get_by_test_id("export-create").click()
    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")

    # Then its row goes on to done by itself (the page watches it), with every row counted
    row = page.locator('[data-testid^="export-row-"]').first
    export_id = (row.get_attribute("data-testid") or "").removeprefix("export-row-")
    expect(page.get_by_test_id(f"export-row-{export_id}")).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.get_by_test_id(f"export-progress-{export_id}")).to_have_attribute("value", "100")
    expect(page.get_by_test_id(f"export-rows-{export_id}")).to_have_text("2")

    # and its file downloads: UTF-8 with a BOM, the orders' header first, then the seeded orders
    with page.expect_download() as download:
        page.get_by_test_id(f"export-download-{export_id}").click()
    lines = Path(download.value.path()).read_bytes().decode("utf-8").splitlines()
    assert lines[0] == (
        "\ufeff下单时间 (placed_at),订单 (order_id),买家 (buyer),状态 (status),来源 (source),原价/分 (list_fen),"
        "优惠/分 (discount_fen),实付/分 (amount_fen),实付/元 (amount_yuan),已退款/分 (refunded_fen),"
        "已退款/元 (refunded_yuan),支付时间 (paid_at),分享码 (share_code),"
        "一级 (upline_1),二级 (upline_2),三级 (upline_3)"
    )
    assert len(lines) == 3
    assert {line.split(",")[1] for line in lines[1:]} == set(seeded["orders"])
    assert download.value.suggested_filename == f"orders-{seeded['today']}-{seeded['today']}.csv"


def test_a_running_exports_progress_moves_on_the_page_until_it_ends(page: Page, live_api: LiveApi) -> None:
    # Given an export the test runs itself: written to the store without a job message (the event
    # runner never sees it), its lease held by this test
    tenant = new_tenant()
    store = get_store().exports
    now = utcnow()
    export = Export(
        tenant=tenant,
        id=f"exp-{unique('t')}",
        kind="ledger",
        format="xlsx",
        first_day=(now - timedelta(days=1)).date().isoformat(),
        last_day=now.date().isoformat(),
        state="queued",
        actor="admin:auditor",
        created_at=iso(now),
        updated_at=iso(now),
    )
    store.create(export, AuditEvent(f"export:{export.id}", "export.requested", "admin:auditor", {}), now)
    held = int(time.time())
    assert store.claim(tenant, export.id, "test", held, held + 600, now) is not None
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if f"/v1/admin/exports/{export.id}" in r.url else None)

    log_in(page, "auditor", appid=tenant)
    open_page(page, "exports", "exports-rows")
    expect(page.get_by_test_id(f"export-row-{export.id}")).to_have_attribute("data-state", "running")
    expect(page.get_by_test_id(f"export-progress-{export.id}")).to_have_attribute("value", "0")

    # When the run saves a part at 40 %, the page shows it without a reload
    point = Checkpoint(
        rows=1234, progress=40, phase="rows", cursor=None, object_key=None, upload_id=None, parts=[], size=0
    )
    assert store.checkpoint(tenant, export.id, "test", point, utcnow())
    expect(page.get_by_test_id(f"export-progress-{export.id}")).to_have_attribute("value", "40")
    expect(page.get_by_test_id(f"export-rows-{export.id}")).to_have_text("1,234")

    # and when it fails, the row says why, offers no file, and the page stops asking
    held_export = store.get(tenant, export.id)
    assert held_export is not None
    event = AuditEvent(f"export:{export.id}", "export.failed", "system:test", {})
    assert store.finish(
        held_export, "test", state="failed", point=None, file_key=None, error="disk full", event=event, when=utcnow()
    )
    expect(page.get_by_test_id(f"export-row-{export.id}")).to_have_attribute("data-state", "failed")
    expect(page.get_by_test_id(f"export-error-{export.id}")).to_have_text("disk full")
    expect(page.get_by_test_id(f"export-download-{export.id}")).to_have_count(0)
    asked = len(polls)
    page.wait_for_timeout(2_500)
    assert len(polls) == asked


def test_a_bad_range_shows_the_servers_error(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "owner", appid=seeded["tenant"])
    open_page(page, "exports", "exports-rows")
    page.get_by_test_id("export-from").fill("2026-03-10")
    page.get_by_test_id("export-to").fill("2026-03-01")
    page.get_by_test_id("export-create").click()
    expect(page.get_by_test_id("message-code")).to_have_text("invalid_range")


# --- the README's screenshot ----------------------------------------------------------------------


def seed_showcase(tenant: str, live_api: LiveApi) -> Principal:
    """A livelier day for the README's picture: a three-level team, shares on three channels,
    three products, buyers who order once or twice or never, one payout waiting."""
    owner = Principal(tenant, "owner", Role.OWNER)
    ops = Principal(tenant, "ops", Role.OPS)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 2000})["version"])
    for pid, name, price in (("lipstick", "口红", 12_900), ("mask", "面膜礼盒", 8_800), ("serum", "精华液", 25_900)):
        catalog.create_product(ops, pid, name, price)
    top, mid, lead, other = (user(tenant) for _ in range(4))
    referrals.scan(mid, shares.create(top, None, "moments").code)
    referrals.scan(lead, shares.create(mid, None, "group").code)
    codes = {
        "moments": shares.create(lead, "lipstick", "moments").code,
        "poster": shares.create(lead, "serum", "poster").code,
        "group": shares.create(other, "mask", "group").code,
    }
    plan = [
        ("moments", [("lipstick", 2)], 2),
        ("poster", [("serum", 1)], 1),
        ("group", [("mask", 1), ("lipstick", 1)], 2),
        ("moments", [("mask", 3)], 1),
        (None, [("serum", 1)], 1),
    ]
    for channel, lines, repeat in plan:
        buyer = user(tenant)
        if channel:
            referrals.scan(buyer, codes[channel])
        for _ in range(repeat):
            paid_order(buyer, lines, codes[channel] if channel else None)
    for channel in ("moments", "poster", "poster"):
        referrals.scan(user(tenant), codes[channel])  # visitors who bound and bought nothing yet
    who = promoter_with(tenant, 20_000, live_api)
    approved, _ = withdrawals.request(who, 8_800)
    withdrawals.approve(Principal(tenant, "finance", Role.FINANCE), approved["id"])
    return owner


@pytest.mark.skipif(not os.environ.get("UPDATE_SCREENSHOTS"), reason="writes docs/screenshots/: UPDATE_SCREENSHOTS=1")
def test_write_the_dashboard_screenshot(page: Page, live_api: LiveApi) -> None:
    tenant = new_tenant()
    owner = seed_showcase(tenant, live_api)
    today = local_today()

    def counted() -> bool:
        day = reports.daily(owner, today, today)["days"][0]
        return day["orders"] == 7 and day["commission_fen"]["3"] > 0 and day["new_bindings"] == 9

    eventually(counted, timeout=90)
    log_in(page, "owner", appid=tenant)
    open_page(page, "dashboard", "dash-kpis", "src-rows", "funnel")
    page.wait_for_timeout(1_000)  # the charts' entry animation
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
