"""The load driver at a tiny size, so it cannot rot: its own stack, HTTP traffic with payments,
receipts, refunds and withdrawals, then no server error, money conserved for every promoter and
every paid order's commission at each level (bench/load.py)."""

from __future__ import annotations

import pytest

from bench import load


@pytest.fixture(scope="module")
def report() -> dict:
    return load.run(load.Options(promoters=30, orders=40, workers=4, withdrawals=4))


def test_the_small_load_has_no_server_error_and_every_request_is_measured(report: dict) -> None:
    assert report["server_errors"] == 0, report["routes"]
    assert report["unexpected_answers"] == [], report["unexpected_answers"]
    assert report["requests"] == sum(r["count"] for r in report["routes"].values())
    assert report["routes"]["POST /v1/orders"]["count"] == 40
    assert report["routes"]["POST /v1/auth/login"]["count"] == 30
    assert report["routes"]["POST /v1/referrals/scan"]["count"] == 29  # one head, 29 bound below it
    assert report["raw_getitem_ms"]["under_load"]["p50"] > 0
    assert report["sizes"]["refunds"] > 0
    assert report["sizes"]["withdrawals"] > 0


def test_the_books_hold_after_the_load(report: dict) -> None:
    books = report["books"]
    assert books["promoters_checked"] == 30
    assert books["paid_orders"] == 40
    assert books["commission_lines_expected"] > 40  # buyers below a head have two or three levels
    assert books["conservation_violations"] == 0, books["examples"]
    assert books["paid_orders_missing_a_commission_line"] == 0, books["examples"]
    assert books["commission_lines_wrong"] == 0, books["examples"]


def test_the_run_counts_what_the_cost_model_prices(report: dict) -> None:
    api, events = report["usage"]
    # the API process saw the driver's requests and WeChat's twins' notifications, nothing else
    callbacks = sum(n for route, n in api["routes"].items() if route.startswith("POST /v1/callbacks/"))
    assert callbacks >= 40  # one payment notification per order at least
    assert sum(api["routes"].values()) - callbacks == report["requests"]
    assert api["invocations"]["api_handler"] == sum(api["routes"].values())
    assert api["write_request_units"] > 0
    assert events["invocations"]["on_order_change"] > 0
    assert events["write_request_units"] > 0
    bill = report["cost"]
    assert bill["paid_orders"] == 10_000
    assert bill["items"]["api_requests"]["quantity"] > 0
