"""The plans page's simulator in headless Chromium against the live local stack.

A fresh mini-program gets an active plan (10 % / 5 % / 2 %) and two paid orders that earned
commission; in the page a draft paying 20 % at level 1 is simulated and the draft's level-1
commission on screen must be higher than the active plan's. A draft the server rejects shows the
server's message and details, as the editor shows them when saving.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chalicelib.entities import Principal, Role
from chalicelib.services import reports, simulator
from tests.browser.test_console import expect_error, log_in
from tests.browser.test_console_pages import new_tenant
from tests.browser.test_dashboard_exports import local_today, seed_day
from tests.e2e.conftest import LiveApi, eventually

DRAFT = '{"rates_bps": [2000, 500, 200], "cap_bps": 3000}'
SIMULATORS = ["owner", "ops", "finance"]


@pytest.fixture(scope="module")
def seeded(live_api: LiveApi) -> dict[str, Any]:
    """A new mini-program with an active plan and two paid orders today whose commission is in
    the ledger, and which the simulator's index read already finds."""
    tenant = new_tenant()
    seed = seed_day(tenant)
    owner: Principal = seed["owner"]
    today = local_today()

    def ready() -> bool:
        earned = reports.daily(owner, today, today)["days"][0]["commission_fen"]["1"] > 0
        replayed = simulator.simulate(owner, {"plan": {"rates_bps": [1000, 500, 200], "cap_bps": 2000}, "days": 1})
        return earned and replayed["orders"] == 2 and replayed["active"]["commission_fen"]["1"] > 0

    eventually(ready, timeout=60)
    return {"tenant": tenant, **seed}


def fen_on_screen(page: Page, testid: str) -> int:
    """The yuan amount a cell shows (e.g. "12.34", "1,234.50" or a change "+13.35"), in integer fen."""
    text = page.get_by_test_id(testid).inner_text().strip().replace(",", "")
    match = re.fullmatch(r"([-+]?)(\d+)\.(\d{2})", text)
    assert match, f"{testid} shows {text!r}, not a yuan amount"
    fen = int(match[2]) * 100 + int(match[3])
    return -fen if match[1] == "-" else fen


def open_plans(page: Page) -> None:
    page.get_by_test_id("nav-plans").click()
    expect(page.get_by_test_id("plans")).to_be_visible()
    expect(page.get_by_test_id("plans-rows")).to_have_attribute("data-loaded", "true")


@pytest.mark.parametrize("role", [*SIMULATORS, "auditor"])
def test_owners_ops_and_finance_get_the_simulator_and_only_owners_save(
    page: Page, seeded: dict[str, Any], role: str
) -> None:
    log_in(page, role, appid=seeded["tenant"])
    open_plans(page)

    draft = page.get_by_test_id("plan-draft")
    (expect(draft).to_be_visible if role in SIMULATORS else expect(draft).to_be_hidden)()
    save = page.get_by_test_id("plan-editor")
    (expect(save).to_be_visible if role == "owner" else expect(save).to_be_hidden)()
    if role in SIMULATORS:
        expect(page.get_by_test_id("plan-simulate")).to_be_visible()
        expect(page.get_by_test_id("plan-sim-days")).to_have_value("30")


def test_a_draft_with_a_higher_level_1_rate_shows_more_level_1_commission(page: Page, seeded: dict[str, Any]) -> None:
    # Given the plans page of a mini-program with an active plan and two paid orders
    log_in(page, "finance", appid=seeded["tenant"])
    open_plans(page)
    # When a draft paying 20 % at level 1 (the active plan pays 10 %) is simulated over 7 days
    page.get_by_test_id("plan-json").fill(DRAFT)
    page.get_by_test_id("plan-sim-days").fill("7")
    page.get_by_test_id("plan-simulate").click()
    # Then both plans are shown side by side and the draft pays more at level 1
    expect(page.get_by_test_id("plan-sim")).to_be_visible()
    expect(page.get_by_test_id("message")).to_be_hidden()
    expect(page.get_by_test_id("plan-sim-summary")).to_contain_text("2")
    expect(page.get_by_test_id("plan-sim-active-head")).to_contain_text("1")  # the active version
    active, draft = fen_on_screen(page, "plan-sim-active-level-1"), fen_on_screen(page, "plan-sim-draft-level-1")
    assert active > 0
    assert draft > active
    assert fen_on_screen(page, "plan-sim-change-level-1") == draft - active
    # levels 2 and 3 are unchanged, so the totals differ by the level-1 change
    for level in ("2", "3"):
        assert fen_on_screen(page, f"plan-sim-draft-level-{level}") == fen_on_screen(
            page, f"plan-sim-active-level-{level}"
        )
    assert fen_on_screen(page, "plan-sim-draft-total") - fen_on_screen(page, "plan-sim-active-total") == draft - active
    # the cost shows as a percentage of sales, and is higher under the draft
    cost = page.get_by_test_id("plan-sim-draft-cost").inner_text()
    assert re.fullmatch(r"\d+\.\d{2}%", cost), cost
    assert float(cost[:-1]) > float(page.get_by_test_id("plan-sim-active-cost").inner_text()[:-1])
    # the sharer earns more: one promoter gains, listed among the largest changes
    expect(page.get_by_test_id("plan-sim-promoters")).to_contain_text("1")
    sharer = seeded["sharer"].subject
    expect(page.get_by_test_id(f"plan-sim-top-{sharer}")).to_be_visible()
    expect(page.get_by_test_id("plan-sim-top-empty")).to_be_hidden()
    expect(page.get_by_test_id("plan-sim-caps")).to_have_attribute("data-count", "0")

    # and the figures follow the language switch
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("plan-sim-level-1")).to_contain_text("Level 1")
    assert fen_on_screen(page, "plan-sim-draft-level-1") == draft


def test_a_bad_draft_or_days_shows_the_servers_message(page: Page, seeded: dict[str, Any]) -> None:
    log_in(page, "ops", appid=seeded["tenant"])
    open_plans(page)
    editor = page.get_by_test_id("plan-json")

    # A plan that could pay above its cap: the server's invalid_plan and its details
    editor.fill('{"rates_bps": [1000, 500, 200], "cap_bps": 1000}')
    page.get_by_test_id("plan-simulate").click()
    expect_error(page, "invalid_plan")
    expect(page.get_by_test_id("plan-errors")).to_contain_text("above its cap")
    expect(page.get_by_test_id("plan-sim")).to_be_hidden()

    # Days outside 1..90: the server's invalid_days
    editor.fill(DRAFT)
    page.get_by_test_id("plan-sim-days").fill("91")
    page.get_by_test_id("plan-simulate").click()
    expect_error(page, "invalid_days")
    expect(page.get_by_test_id("message-text")).to_contain_text("90")
    expect(page.get_by_test_id("plan-errors")).to_be_hidden()

    # A valid draft clears the message and shows the simulation
    page.get_by_test_id("plan-sim-days").fill("30")
    page.get_by_test_id("plan-simulate").click()
    expect(page.get_by_test_id("plan-sim")).to_be_visible()
    expect(page.get_by_test_id("message")).to_be_hidden()


def test_the_simulators_roles_are_the_routes_roles() -> None:
    from chalicelib.api.openapi import ROUTES

    roles = ROUTES[("POST", "/v1/admin/plans/simulate")].roles
    assert sorted(r.value for r in roles) == sorted(SIMULATORS)
    assert Role.AUDITOR not in roles
