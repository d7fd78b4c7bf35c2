"""The console's promoters and orders pages in headless Chromium against the live local stack.

A fresh mini-program: alice ← bob ← dave, an active plan (10 % / 5 % / 2 %) and one paid order of
100.00 yuan by dave. Every operator role finds bob by name, opens him (account cards, commission
line with its rule trace, level-1 team, a link into the tree) and opens the order (its lines and
commission lines); only owners and finance get the refund form, and a refund from the page shows
the server's refusal of a too large amount, then succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chalicelib.entities import Principal, Role
from chalicelib.services import admin_orders, catalog, logins, plans, referrals, shares
from tests.browser.test_console import expect_error, log_in
from tests.browser.test_console_pages import new_tenant
from tests.browser.test_dashboard_exports import paid_order
from tests.e2e.conftest import LiveApi, eventually
from tests.stack import unique

ROLES = ["owner", "ops", "finance", "auditor"]
REFUNDERS = ["owner", "finance"]


@pytest.fixture(scope="module")
def seeded(live_api: LiveApi) -> dict[str, Any]:
    tenant = new_tenant()
    owner = Principal(tenant, "owner", Role.OWNER)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 2000})["version"])
    catalog.create_product(Principal(tenant, "ops", Role.OPS), "tea", "龙井茶", 10_000)
    names = {n: unique(n.capitalize()) for n in ("alice", "bob", "dave")}
    people = {n: Principal(tenant, logins.login(f"dev-{names[n]}", tenant).user.id, Role.USER) for n in names}
    referrals.scan(people["bob"], shares.create(people["alice"], None, "poster").code)
    referrals.scan(people["dave"], shares.create(people["bob"], None, "poster").code)
    order_id = paid_order(people["dave"], [("tea", 1)], None)
    eventually(lambda: len(admin_orders.detail(owner, order_id)["commissions"]) == 2, timeout=60)
    return {"tenant": tenant, "names": names, "ids": {n: p.subject for n, p in people.items()}, "order": order_id}


def open_page(page: Page, name: str, rows: str) -> None:
    page.get_by_test_id(f"nav-{name}").click()
    expect(page.get_by_test_id(name)).to_be_visible()
    expect(page.get_by_test_id(rows)).to_have_attribute("data-loaded", "true")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_finds_a_promoter_and_opens_them(page: Page, seeded: dict[str, Any], role: str) -> None:
    bob, dave = seeded["ids"]["bob"], seeded["ids"]["dave"]
    log_in(page, role, appid=seeded["tenant"])
    open_page(page, "promoters", "pm-rows")
    # every promoter of the mini-program, newest first
    expect(page.get_by_test_id("pm-rows").locator("tr")).to_have_count(3)
    # When searching by the start of bob's name
    page.get_by_test_id("pm-q").fill(seeded["names"]["bob"][:-2])
    page.get_by_test_id("pm-search").click()
    expect(page.get_by_test_id("pm-rows").locator("tr")).to_have_count(1)
    expect(page.get_by_test_id(f"pm-team-{bob}")).to_have_text("1 / 0 / 0")
    page.get_by_test_id(f"pm-open-{bob}").click()
    # Then his account, his commission line with its rule trace and his level-1 team
    expect(page.get_by_test_id("pm-detail")).to_be_visible()
    expect(page.get_by_test_id("pm-detail-name")).to_have_text(seeded["names"]["bob"])
    expect(page.get_by_test_id("pm-acct-pending_fen")).to_have_text("10.00")
    line = page.get_by_test_id(f"pm-line-{seeded['order']}-1-paid")
    expect(line).to_contain_text("10.00")
    expect(line).to_contain_text("比例 10%")
    expect(line).to_contain_text("计算基数 100.00 元")
    expect(page.get_by_test_id(f"pm-member-{dave}")).to_contain_text(seeded["names"]["dave"])
    # and the tree page opens on him
    page.get_by_test_id("pm-tree").click()
    expect(page).to_have_url(f"{page.url.split('#')[0]}#/users/{bob}")
    expect(page.get_by_test_id("console")).to_be_visible()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_filters_orders_and_reads_the_commission_lines(
    page: Page, seeded: dict[str, Any], role: str
) -> None:
    order_id = seeded["order"]
    log_in(page, role, appid=seeded["tenant"])
    open_page(page, "orders", "ord-rows")
    expect(page.get_by_test_id(f"ord-row-{order_id}")).to_be_visible()
    # a filter that matches nothing, then one that matches (alice is at level 2)
    page.get_by_test_id("ord-state").select_option("cancelled")
    page.get_by_test_id("ord-load").click()
    expect(page.get_by_test_id("ord-empty")).to_be_visible()
    page.get_by_test_id("ord-state").select_option("paid")
    page.get_by_test_id("ord-promoter").fill(seeded["ids"]["alice"])
    page.get_by_test_id("ord-load").click()
    expect(page.get_by_test_id(f"ord-row-{order_id}")).to_contain_text(seeded["names"]["bob"])
    page.get_by_test_id(f"ord-open-{order_id}").click()
    expect(page.get_by_test_id("ord-detail-id")).to_have_text(order_id)
    expect(page.get_by_test_id("ord-detail-lines")).to_contain_text("龙井茶")
    expect(page.get_by_test_id("ord-upline-2")).to_contain_text(seeded["names"]["alice"])
    expect(page.get_by_test_id("ord-line-1-paid")).to_contain_text("比例 10%")
    expect(page.get_by_test_id("ord-line-2-paid")).to_contain_text("5.00")
    form = page.get_by_test_id("ord-refund-form")
    (expect(form).to_be_visible if role in REFUNDERS else expect(form).to_be_hidden)()


def test_finance_refunds_from_the_orders_page(page: Page, seeded: dict[str, Any]) -> None:
    order_id = seeded["order"]
    log_in(page, "finance", appid=seeded["tenant"])
    page.goto(f"/admin#/orders/{order_id}")
    expect(page.get_by_test_id("ord-detail-id")).to_have_text(order_id)
    # more than was paid: the server's refusal is shown
    page.get_by_test_id("ord-refund-amount").fill("200.00")
    page.get_by_test_id("ord-refund-reason").fill("破损")
    page.get_by_test_id("ord-refund").click()
    expect_error(page, "invalid_amount")
    expect(page.get_by_test_id("message-text")).to_contain_text("between 1 and 10000 fen")
    # a part of it goes through and shows on the order
    page.get_by_test_id("ord-refund-amount").fill("30.00")
    page.get_by_test_id("ord-refund").click()
    expect(page.get_by_test_id("message")).to_have_attribute("data-kind", "ok")
    expect(page.get_by_test_id("ord-detail-refunded")).to_have_text("30.00")
    expect(page.get_by_test_id("ord-detail-refunds")).to_contain_text("30.00")
    expect(page.get_by_test_id("ord-detail-refunds")).to_contain_text("破损")


def test_the_pages_switch_to_english(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "auditor", appid=seeded["tenant"])
    open_page(page, "promoters", "pm-rows")
    expect(page.get_by_test_id("nav-promoters")).to_have_text("推广员")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("nav-promoters")).to_have_text("Promoters")
    expect(page.get_by_test_id("nav-orders")).to_have_text("Orders")
    page.goto(f"/admin#/orders/{seeded['order']}")
    expect(page.get_by_test_id("ord-line-1-paid")).to_contain_text("rate 10%")
