"""`make bench`: run every benchmark, print the ratios, write JSON under bench/results/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import binding, coldstart, commission, cost, export, payout, reports, simulator

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binds", type=int, default=600, help="bindings per side")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=9, help="interpreter starts per side")
    parser.add_argument("--orders", type=int, default=240, help="paid orders per side (commission pipeline)")
    parser.add_argument("--hot-orders", type=int, default=1200, help="orders of one hot level-1 promoter")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile the commission engine (default: when the pipeline misses its ratio)",
    )
    parser.add_argument("--withdrawals", type=int, default=100_000, help="approved withdrawals of the large payout run")
    parser.add_argument("--cost-promoters", type=int, default=150, help="promoters of the cost model's load run")
    parser.add_argument("--cost-orders", type=int, default=300, help="orders of the cost model's load run")
    parser.add_argument("--team", type=int, default=100_000, help="team size of the large promoter (reports)")
    parser.add_argument("--export-rows", type=int, default=1_000_000, help="ledger rows of the large export")
    parser.add_argument("--sim-orders", type=int, default=10_000, help="paid orders the plan simulator replays")
    parser.add_argument(
        "--only",
        choices=["coldstart", "binding", "commission", "payout", "cost", "reports", "export", "simulator"],
        help="run one benchmark",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    benchmarks = {
        "coldstart": lambda: coldstart.run(args.runs),
        "binding": lambda: binding.run(args.binds, args.threads),
        "commission": lambda: commission.run(args.orders, args.hot_orders, args.profile),
        "payout": lambda: payout.run(args.withdrawals // 10, args.withdrawals),
        "cost": lambda: cost.run(args.cost_promoters, args.cost_orders),
        "export": lambda: export.run(args.export_rows // 10, args.export_rows),
        "reports": lambda: reports.run(args.team),
        "simulator": lambda: simulator.run(args.sim_orders),
    }
    for name, bench in benchmarks.items():
        if args.only and name != args.only:
            continue
        result = bench()
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"== {name}: {json.dumps(result, indent=2)}")


if __name__ == "__main__":
    main()
