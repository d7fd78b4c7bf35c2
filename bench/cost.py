"""A modelled AWS bill for 10,000 paid orders, from what a load run counted (issue 10, "Cost").

The counts come from `bench.meter` in a run of `bench.load` (API and event processes added up) and
are scaled to 10,000 paid orders, so the bill carries the run's whole mix: sign-ups and team
bindings (one promoter per two orders), payments, receipts, refunds, reads and withdrawals. Items:

- API Gateway REST requests: every route invocation except `/v1/sandbox/*` (the sandbox twins stand
  in for the buyer paying inside WeChat; WeChat's notification to the callback is counted);
- Lambda requests and GB-seconds: each invocation's measured duration rounded up to 1 ms, times the
  function's memory from `.chalice/config.json`'s prod stage (durations measured on DynamoDB Local
  and a shared 2-core machine: an upper bound for Lambda next to DynamoDB);
- DynamoDB on-demand read and write request units as DynamoDB Local reported them (streams read by
  Lambda are free);
- SQS: one SendMessageBatch per ten messages sent, one receive and one delete per queue invocation;
- CloudWatch Logs: stdout bytes the handlers wrote, plus Lambda's START/END/REPORT lines and one API
  access log line per request (sizes modelled below), ingested and stored one month;
- X-Ray: the template's sampling, read from `infra/merge-prod.json` (`infra.iam` writes it): the
  API rule's FixedRate of API requests (no reservoir), and every other invocation only when the
  `EventTracing` parameter defaults to `Active` (Lambda's own rule, one a second and 5 %, would
  keep nearly every one at this volume).

Fixed monthly costs that do not grow with orders (alarms, idle SQS polling, schedules, custom
metrics) are not in the per-order bill; the alarms are listed apart.

Prices are list prices without free tier, one table below with source and date; the CNY bill uses
the China (Beijing) region's own CNY prices, the USD bill us-east-1's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAID_ORDERS = 10_000
TARGET_CNY = 5.0
USD_TO_CNY = 7.1  # for comparing the two bills only; an assumed rate (late 2026), not a quote
CHECKED = "2026-11-29"
MB = 1024 * 1024

PLATFORM_LOG_BYTES = 330  # START, END and REPORT lines of one Lambda invocation
ACCESS_LOG_BYTES = 400  # one API Gateway access log line (JSON: request id, ip, route, status, latency)


@dataclass(frozen=True)
class Price:
    unit: str
    usd: float  # us-east-1
    cny: float  # cn-north-1 (Beijing)
    source: str
    verified: str  # what of it was read at the source on CHECKED


PRICES: dict[str, Price] = {
    "api_requests": Price(
        "per million REST API requests (first tier)", 3.50, 28.94,
        "https://aws.amazon.com/api-gateway/pricing/ ; https://www.amazonaws.cn/en/api-gateway/pricing/",
        "USD read; CNY not found in the stored pages (estimate, verify)",
    ),
    "lambda_requests": Price(
        "per million Lambda requests", 0.20, 1.36,
        "https://aws.amazon.com/lambda/pricing/ ; https://www.amazonaws.cn/en/lambda/pricing/",
        "USD read; CNY estimate (verify)",
    ),
    "lambda_gb_seconds": Price(
        "per GB-second, x86", 0.0000166667, 0.000113477,
        "https://aws.amazon.com/lambda/pricing/ ; https://www.amazonaws.cn/en/lambda/pricing/",
        "USD read; CNY estimate (verify)",
    ),
    "dynamodb_write_units": Price(
        "per million write request units, on-demand", 0.625, 11.1538,
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ ; https://www.amazonaws.cn/en/dynamodb/pricing/",
        "CNY read (China regions' on-demand write price); USD from the Nov 2024 price cut (verify)",
    ),
    "dynamodb_read_units": Price(
        "per million read request units, on-demand", 0.125, 2.2308,
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ ; https://www.amazonaws.cn/en/dynamodb/pricing/",
        "estimates at a fifth of the write price, as the pages price them (verify)",
    ),
    "sqs_requests": Price(
        "per million standard queue requests", 0.40, 3.33,
        "https://aws.amazon.com/sqs/pricing/ ; https://www.amazonaws.cn/en/sqs/pricing/",
        "estimates (verify)",
    ),
    "log_ingestion_gb": Price(
        "per GB of CloudWatch Logs ingested (standard)", 0.50, 6.228,
        "https://aws.amazon.com/cloudwatch/pricing/ ; https://www.amazonaws.cn/en/cloudwatch/pricing/",
        "estimates (verify)",
    ),
    "log_storage_gb_month": Price(
        "per GB-month of CloudWatch Logs stored", 0.03, 0.244,
        "https://aws.amazon.com/cloudwatch/pricing/ ; https://www.amazonaws.cn/en/cloudwatch/pricing/",
        "estimates (verify)",
    ),
    "xray_traces": Price(
        "per million X-Ray traces recorded", 5.00, 35.0,
        "https://aws.amazon.com/xray/pricing/ ; https://www.amazonaws.cn/en/xray/pricing/",
        "estimates (verify)",
    ),
    "alarm_month": Price(
        "per standard-resolution alarm metric per month", 0.10, 0.70,
        "https://aws.amazon.com/cloudwatch/pricing/ ; https://www.amazonaws.cn/en/cloudwatch/pricing/",
        "estimates (verify)",
    ),
}  # fmt: skip


@dataclass
class Usage:
    """What one run used (both processes added up)."""

    api_requests: int = 0
    sandbox_requests: int = 0
    invocations: dict[str, int] = field(default_factory=dict)  # function -> invocations (sandbox ones out)
    billed_ms: dict[str, int] = field(default_factory=dict)  # function -> rounded-up milliseconds
    read_units: float = 0.0
    write_units: float = 0.0
    log_bytes: int = 0
    queue_batches: int = 0
    queue_invocations: int = 0

    @classmethod
    def from_snapshots(cls, snapshots: list[dict[str, Any]]) -> Usage:
        usage = cls()
        for snap in snapshots:
            sandbox = {r: n for r, n in snap.get("routes", {}).items() if " /v1/sandbox/" in r}
            usage.sandbox_requests += sum(sandbox.values())
            usage.api_requests += sum(snap.get("routes", {}).values()) - sum(sandbox.values())
            for name, count in snap.get("invocations", {}).items():
                usage.invocations[name] = usage.invocations.get(name, 0) + count
            for name, ms in snap.get("billed_ms", {}).items():
                usage.billed_ms[name] = usage.billed_ms.get(name, 0) + ms
            sandbox_ms = sum(snap.get("route_billed_ms", {}).get(r, 0) for r in sandbox)
            if sandbox:
                usage.invocations["api_handler"] -= sum(sandbox.values())
                usage.billed_ms["api_handler"] -= sandbox_ms
            usage.read_units += snap.get("read_request_units", 0.0)
            usage.write_units += snap.get("write_request_units", 0.0)
            usage.log_bytes += snap.get("log_bytes", 0)
            usage.queue_batches += sum(snap.get("queue_batches", {}).values())
        usage.queue_invocations = sum(n for name, n in usage.invocations.items() if name in QUEUE_FUNCTIONS)
        return usage


QUEUE_FUNCTIONS = frozenset({"send_payout", "run_tenant_job"})


def memory_mb(config: Path = ROOT / ".chalice" / "config.json", stage: str = "prod") -> dict[str, int]:
    """Each function's memory in the stage (the stage's default under the key ``*``)."""
    prod = json.loads(config.read_text())["stages"][stage]
    default = int(prod.get("lambda_memory_size", 128))
    found = {"*": default}
    for name, settings in (prod.get("lambda_functions") or {}).items():
        found[name] = int(settings.get("lambda_memory_size", default))
    return found


def tracing(merge: Path = ROOT / "infra" / "merge-prod.json") -> tuple[float, bool]:
    """(share of API requests traced, whether event functions trace every invocation) as deployed."""
    template = json.loads(merge.read_text("utf-8"))
    rule = template["Resources"]["ApiSamplingRule"]["Properties"]["SamplingRule"]
    events = template["Parameters"]["EventTracing"]["Default"] == "Active"
    return float(rule["FixedRate"]), events


def quantities(usage: Usage, memory: dict[str, int]) -> dict[str, float]:
    """The billable quantities of `usage`, in the units of `PRICES` (before scaling)."""
    invocations = sum(usage.invocations.values())
    api_rate, events_traced = tracing()
    event_invocations = invocations - usage.invocations.get("api_handler", 0)
    traces = usage.api_requests * api_rate + (event_invocations if events_traced else 0)
    gb_seconds = sum(ms / 1000 * memory.get(name, memory["*"]) / 1024 for name, ms in usage.billed_ms.items())
    logged = usage.log_bytes + invocations * PLATFORM_LOG_BYTES + usage.api_requests * ACCESS_LOG_BYTES
    return {
        "api_requests": usage.api_requests / 1e6,
        "lambda_requests": invocations / 1e6,
        "lambda_gb_seconds": gb_seconds,
        "dynamodb_write_units": usage.write_units / 1e6,
        "dynamodb_read_units": usage.read_units / 1e6,
        "sqs_requests": (usage.queue_batches + 2 * usage.queue_invocations) / 1e6,
        "log_ingestion_gb": logged / (1024 * MB),
        "log_storage_gb_month": logged / (1024 * MB),
        "xray_traces": traces / 1e6,
    }


def model(usage: Usage, paid_orders: int, memory: dict[str, int] | None = None) -> dict[str, Any]:
    """The bill for `PAID_ORDERS` paid orders, from `usage` of a run that paid `paid_orders`."""
    if paid_orders <= 0:
        raise ValueError("a run without paid orders cannot be scaled")
    scale = PAID_ORDERS / paid_orders
    amounts = quantities(usage, memory or memory_mb())
    items: dict[str, dict[str, Any]] = {}
    for name, amount in amounts.items():
        price = PRICES[name]
        scaled = amount * scale
        items[name] = {"quantity": scaled, "unit": price.unit, "usd": scaled * price.usd, "cny": scaled * price.cny}
    total_usd = sum(i["usd"] for i in items.values())
    total_cny = sum(i["cny"] for i in items.values())
    largest = max(items, key=lambda name: items[name]["cny"])
    return {
        "paid_orders": PAID_ORDERS,
        "scaled_from_paid_orders": paid_orders,
        "items": {
            name: {k: round(v, 6) if isinstance(v, float) else v for k, v in i.items()} for name, i in items.items()
        },
        "total_usd": round(total_usd, 4),
        "total_cny": round(total_cny, 4),
        "total_usd_in_cny": round(total_usd * USD_TO_CNY, 4),
        "largest_item": largest,
        "target_cny": TARGET_CNY,
        "within_target": total_cny < TARGET_CNY and total_usd * USD_TO_CNY < TARGET_CNY,
        "fixed_monthly": {"alarms": alarms_monthly()},
        "prices": {name: vars(price) for name, price in PRICES.items()},
        "prices_checked": CHECKED,
        "regions": {"usd": "us-east-1", "cny": "cn-north-1 (Beijing)"},
        "usd_to_cny": USD_TO_CNY,
    }


def alarms_monthly(template: Path = ROOT / "infra" / "merge-prod.json") -> dict[str, float]:
    """The alarms of the production template, a fixed monthly cost."""
    resources = json.loads(template.read_text()).get("Resources", {}) if template.exists() else {}
    count = sum(1 for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm")
    price = PRICES["alarm_month"]
    return {"alarms": count, "usd": round(count * price.usd, 2), "cny": round(count * price.cny, 2)}


def describe(bill: dict[str, Any]) -> str:
    """The bill as lines of text."""
    lines = [
        f"cost of {bill['paid_orders']:,} paid orders (scaled from {bill['scaled_from_paid_orders']}): "
        f"¥{bill['total_cny']:.2f} in cn-north-1, ${bill['total_usd']:.3f} in us-east-1 "
        f"(¥{bill['total_usd_in_cny']:.2f} at {bill['usd_to_cny']}); target under ¥{bill['target_cny']}: "
        f"{'met' if bill['within_target'] else 'MISSED'}; largest item: {bill['largest_item']}",
    ]
    for name, item in sorted(bill["items"].items(), key=lambda kv: -kv[1]["cny"]):
        lines.append(
            f"  {name:22} {item['quantity']:>14.6f}  ¥{item['cny']:>8.4f}  ${item['usd']:>8.4f}  ({item['unit']})"
        )
    alarms = bill["fixed_monthly"]["alarms"]
    lines.append(f"  fixed monthly, not per order: {alarms['alarms']} alarms ¥{alarms['cny']} / ${alarms['usd']}")
    return "\n".join(lines)


def write_units_per_order(snapshots: list[dict[str, Any]], paid_orders: int) -> dict[str, float]:
    """Write units per paid order for each table and index (largest first): where the biggest
    item of the bill goes."""
    per: dict[str, float] = {}
    for snap in snapshots:
        for key, units in snap.get("units_by_table", {}).items():
            kind, _, table = key.partition(" ")
            if kind == "write":
                per[table] = per.get(table, 0.0) + units / paid_orders
    return {table: round(units, 2) for table, units in sorted(per.items(), key=lambda kv: -kv[1])}


def run(promoters: int, orders: int) -> dict[str, Any]:
    """`make bench`'s cost: a load run at a small size, its counts priced."""
    from bench import load

    result = load.run(load.Options(promoters=promoters, orders=orders))
    bill = result["cost"]
    writes = write_units_per_order(result["usage"], bill["scaled_from_paid_orders"])
    print(describe(bill))
    print(f"  write units per paid order: {sum(writes.values()):.1f}; by table and index:")
    for table, units in list(writes.items())[:12]:
        print(f"    {table:32} {units:7.2f}")
    return {
        "load": {k: result[k] for k in ("sizes", "seconds", "server_errors", "books")},
        "write_units_per_paid_order": writes,
        "usage": result["usage"],
        **bill,
    }
