"""The plan simulator replaying 10,000 orders against raw reads of the same orders, one run
(issue 12). Target: raw read time / simulation time >= 0.5 (the replay costs at most twice
reading the orders).

A tenant gets a three-level team (200 promoters, each with a level-1, level-2 and level-3 upline
among them), a ladder plan active, and `orders` paid orders of one or two products written
directly as a payment leaves them (status paid, `paid_at` today, the sparse `sold` index key).
Measured, in interleaved rounds after a warm-up:
- raw: the same index query over every shard (`store.sold.query`, the simulator's own read: same
  projection, every item materialised by PynamoDB; threads, as the simulator reads them), nothing
  parsed or computed;
- simulation: `services.simulator.simulate` for the last day under a draft with a higher level-1
  rate (reads, parses, replays both plans with the ladder, looks promoters and names up).

The simulator pauses Python's cyclic garbage collector while it replays (`chalicelib.collector`):
its allocations kept triggering full collections. So that the ratio owes nothing to a handicapped
read, the raw read is also timed with the collector paused, and the ratio is taken against the
faster of the two raw reads.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from bench.binding import _setup, fresh_ddb_local

TARGET = 0.5
TENANT = "wxbench000000001"
PROMOTERS = 200
PLAN = {
    "rates_bps": [1000, 500, 200],
    "cap_bps": 3000,
    "ladder": [{"min_month_sales_fen": 500_000, "level1_rate_bps": 1200}],
}
DRAFT = {**PLAN, "rates_bps": [1100, 500, 200]}


def run(orders: int, rounds: int = 5) -> dict[str, Any]:
    with fresh_ddb_local() as endpoint:
        _setup(endpoint)
        return _measure(orders, rounds)


def _seed(orders: int) -> Any:
    """Promoters, an active plan and `orders` paid orders; returns the owner."""
    from chalicelib.clock import iso, utcnow
    from chalicelib.entities import Principal, Role
    from chalicelib.services import plans
    from chalicelib.store import shards
    from chalicelib.store.audit import canonical
    from chalicelib.store.models import OrderModel, UserModel

    rng = random.Random(12)
    now = utcnow()
    uids = [f"u{i:04d}" for i in range(PROMOTERS)]
    with UserModel.batch_write() as batch:
        for uid in uids:
            batch.save(
                UserModel(
                    pk=f"{TENANT}#{uid}", tenant=TENANT, uid=uid, openid=f"o-{uid}", name=f"推广员 {uid}",
                    created_at=iso(now), promoter=True, version=1,
                )
            )  # fmt: skip
    owner = Principal(TENANT, "owner", Role.OWNER)
    plans.activate(owner, plans.create(owner, PLAN)["version"])
    with OrderModel.batch_write() as batch:
        for i in range(orders):
            order_id = f"o{i:06d}"
            upline = rng.sample(uids, 3)
            lines: list[dict[str, Any]] = [
                {"product_id": f"p{rng.randint(1, 20)}", "name": "商品", "qty": 1, "unit_price_fen": p, "paid_fen": p}
                for p in (rng.randint(100, 20_000) for _ in range(rng.randint(1, 2)))
            ]
            amount = sum(line["paid_fen"] for line in lines)
            paid_at = iso(now - timedelta(seconds=rng.randint(1, 3_000)))
            batch.save(
                OrderModel(
                    pk=f"{TENANT}#{order_id}", tenant=TENANT, order_id=order_id, buyer=f"b{i:06d}",
                    buyer_key=f"{TENANT}#b{i:06d}", source="miniprogram", lines=canonical(lines), list_fen=amount,
                    amount_fen=amount, refunded_fen=0, status="paid",
                    attribution=canonical({"upline": upline, "share_code": None, "plan_version": 1,
                                           "buyer_is_promoter": False}),
                    placed_at=paid_at, paid_at=paid_at, version=2,
                    sold_key=shards.key(f"{TENANT}#sold", order_id),
                )
            )  # fmt: skip
    return owner


def _raw_paused(start: str, end: str) -> int:
    from chalicelib import collector

    with collector.paused():
        return _raw(start, end)


def _raw(start: str, end: str) -> int:
    """Every item of the same index range, read shard by shard on threads, nothing parsed."""
    from chalicelib.store import shards, sold

    def read(partition: str) -> int:
        return len(list(sold.query(partition, start, end)))

    with ThreadPoolExecutor(max_workers=shards.SHARDS) as pool:
        return sum(pool.map(read, shards.keys(f"{TENANT}#sold")))


def _measure(orders: int, rounds: int) -> dict[str, Any]:
    from chalicelib.clock import iso, utcnow
    from chalicelib.services import simulator

    started = time.perf_counter()
    owner = _seed(orders)
    setup_s = time.perf_counter() - started
    now = utcnow()
    span = simulator.window("Asia/Shanghai", 1, now, ())
    start, end = iso(span.start), iso(span.end)

    def simulate() -> dict[str, Any]:
        return simulator.simulate(owner, {"plan": DRAFT, "days": 1}, now=now)

    result = simulate()  # warm-up, and a check that it replays them all
    if result["orders"] != orders or _raw(start, end) != orders:
        raise RuntimeError(f"expected {orders} orders, the simulator saw {result['orders']}")
    calls = {"raw": lambda: _raw(start, end), "raw_paused": lambda: _raw_paused(start, end), "simulation": simulate}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(rounds):
        for name in list(calls) if i % 2 == 0 else reversed(list(calls)):
            t0 = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    raw, simulation = min(medians["raw"], medians["raw_paused"]), medians["simulation"]
    ratio = raw / simulation
    return {
        "orders": orders,
        "rounds": rounds,
        "raw_read_s_median": round(medians["raw"], 3),
        "raw_read_collector_paused_s_median": round(medians["raw_paused"], 3),
        "simulation_s_median": round(simulation, 3),
        "ratio": round(ratio, 3),
        "target": f">= {TARGET}",
        "ok": ratio >= TARGET,
        "figures": json.loads(json.dumps({k: result[k] for k in ("sales_fen", "draft", "active", "promoters")})),
        "setup_s": round(setup_s, 1),
    }
