"""The cost model's arithmetic on fixed counts (bench/cost.py)."""

from __future__ import annotations

import pytest

from bench import cost
from bench.cost import PRICES, Usage

# Two processes' meter snapshots: the API (with sandbox routes, which production never sees) and the
# event runner (a stream function and the payout queue).
API = {
    "routes": {"POST /v1/orders": 300, "POST /v1/sandbox/orders/{id}/pay-success": 100},
    "route_billed_ms": {"POST /v1/orders": 30_000, "POST /v1/sandbox/orders/{id}/pay-success": 5_000},
    "invocations": {"api_handler": 400},
    "billed_ms": {"api_handler": 35_000},
    "read_request_units": 1_000.0,
    "write_request_units": 4_000.0,
    "log_bytes": 1_000_000,
    "queue_batches": {},
}
EVENTS = {
    "routes": {},
    "invocations": {"on_order_change": 50, "send_payout": 10},
    "billed_ms": {"on_order_change": 20_000, "send_payout": 2_000},
    "read_request_units": 500.0,
    "write_request_units": 6_000.0,
    "log_bytes": 48_576,
    "queue_batches": {"payouts": 5},
}
MEMORY = {"*": 512, "on_order_change": 1024}


def test_usage_adds_both_processes_and_leaves_out_the_sandbox_routes() -> None:
    usage = Usage.from_snapshots([API, EVENTS])
    assert usage.api_requests == 300
    assert usage.sandbox_requests == 100
    assert usage.invocations == {"api_handler": 300, "on_order_change": 50, "send_payout": 10}
    assert usage.billed_ms == {"api_handler": 30_000, "on_order_change": 20_000, "send_payout": 2_000}
    assert (usage.read_units, usage.write_units) == (1_500.0, 10_000.0)
    assert usage.log_bytes == 1_048_576
    assert (usage.queue_batches, usage.queue_invocations) == (5, 10)


def test_quantities_follow_the_units_of_the_price_table() -> None:
    q = cost.quantities(Usage.from_snapshots([API, EVENTS]), MEMORY)
    assert q["api_requests"] == pytest.approx(300 / 1e6)
    assert q["lambda_requests"] == pytest.approx(360 / 1e6)
    # 30 s and 2 s at 0.5 GB, 20 s at 1 GB
    assert q["lambda_gb_seconds"] == pytest.approx(30 * 0.5 + 2 * 0.5 + 20 * 1.0)
    assert q["dynamodb_read_units"] == pytest.approx(1_500 / 1e6)
    assert q["dynamodb_write_units"] == pytest.approx(10_000 / 1e6)
    assert q["sqs_requests"] == pytest.approx((5 + 2 * 10) / 1e6)
    logged = 1_048_576 + 360 * cost.PLATFORM_LOG_BYTES + 300 * cost.ACCESS_LOG_BYTES
    assert q["log_ingestion_gb"] == pytest.approx(logged / 1024**3)
    # the API's sampling rule traces 5 % of its requests; event functions trace nothing by default
    assert q["xray_traces"] == pytest.approx(300 * 0.05 / 1e6)


def test_tracing_is_read_from_the_template_that_deploys(tmp_path) -> None:
    from infra import iam

    assert cost.tracing() == (iam.API_TRACE_RATE, False)
    template = iam.apply({"Resources": {}, "Parameters": {}})
    template["Parameters"]["EventTracing"] = {**template["Parameters"]["EventTracing"], "Default": "Active"}
    merge = tmp_path / "merge.json"
    merge.write_text(iam.render(template), encoding="utf-8")
    assert cost.tracing(merge) == (iam.API_TRACE_RATE, True)


def test_the_meter_bills_transactions_at_two_units_per_item_where_dynamodb_local_reports_less() -> None:
    from bench.meter import Meter, written_items

    meter = Meter()
    params = {
        "TransactItems": [
            {"Update": {"TableName": "t-stats", "Key": {}}},
            {"Update": {"TableName": "t-stats", "Key": {}}},
            {"Put": {"TableName": "t-ledger", "Item": {}}},
        ]
    }
    items = written_items("TransactWriteItems", params)
    assert items == {"stats": 2, "ledger": 1}
    # Local's answer for this call: 2 units for the stats table, 4 for a 1-2 KB ledger line (+1 index)
    consumed = [
        {"TableName": "t-stats", "CapacityUnits": 2.0, "Table": {"CapacityUnits": 2.0}},
        {"TableName": "t-ledger", "CapacityUnits": 5.0, "Table": {"CapacityUnits": 4.0},
         "GlobalSecondaryIndexes": {"by_order": {"CapacityUnits": 1.0}}},
    ]  # fmt: skip
    meter.add_dynamodb("TransactWriteItems", consumed, items)
    assert meter.write_units == 4.0 + 4.0 + 1.0
    assert meter.units_by_table == {"write stats": 4.0, "write ledger": 4.0, "write ledger/by_order": 1.0}
    # a refused conditional write is billed at the floor too
    meter.add_dynamodb("PutItem", None, written_items("PutItem", {"TableName": "t-audit"}))
    assert meter.write_units == 10.0


def test_the_bill_scales_to_ten_thousand_paid_orders_and_names_the_largest_item() -> None:
    usage = Usage.from_snapshots([API, EVENTS])
    bill = cost.model(usage, paid_orders=100, memory=MEMORY)
    q = cost.quantities(usage, MEMORY)
    # 100 paid orders in the run: everything times 100
    writes = bill["items"]["dynamodb_write_units"]
    assert writes["quantity"] == pytest.approx(q["dynamodb_write_units"] * 100)
    assert writes["cny"] == pytest.approx(1.0 * PRICES["dynamodb_write_units"].cny, rel=1e-5)  # 1 M units
    assert writes["usd"] == pytest.approx(1.0 * PRICES["dynamodb_write_units"].usd, rel=1e-5)
    expected_cny = sum(q[name] * 100 * PRICES[name].cny for name in q)
    expected_usd = sum(q[name] * 100 * PRICES[name].usd for name in q)
    assert bill["total_cny"] == pytest.approx(expected_cny, abs=1e-4)
    assert bill["total_usd"] == pytest.approx(expected_usd, abs=1e-4)
    assert bill["largest_item"] == max(q, key=lambda name: q[name] * PRICES[name].cny)
    assert bill["within_target"] == (expected_cny < 5 and expected_usd * cost.USD_TO_CNY < 5)


def test_a_cheap_run_meets_the_target_and_an_empty_one_cannot_be_scaled() -> None:
    tiny = Usage(api_requests=10, invocations={"api_handler": 10}, billed_ms={"api_handler": 100}, write_units=10.0)
    assert cost.model(tiny, paid_orders=10_000, memory=MEMORY)["within_target"] is True
    with pytest.raises(ValueError, match="without paid orders"):
        cost.model(tiny, paid_orders=0, memory=MEMORY)


def test_every_price_names_its_source_and_the_prod_memory_is_read_from_the_chalice_config() -> None:
    for price in PRICES.values():
        assert price.source.startswith("https://")
        assert price.usd > 0
        assert price.cny > 0
    memory = cost.memory_mb()
    assert memory["*"] == 512
    assert memory["reconcile_payments"] == 256


def test_write_units_are_told_per_table_and_index_per_paid_order() -> None:
    snapshots = [
        {"units_by_table": {"write stats": 60.0, "read stats": 9.0, "write orders/by_buyer": 10.0}},
        {"units_by_table": {"write stats": 40.0, "write audit": 30.0}},
    ]
    assert cost.write_units_per_order(snapshots, 10) == {"stats": 10.0, "audit": 3.0, "orders/by_buyer": 1.0}
