"""`make bench`: run every benchmark, print the ratios, write JSON under bench/results/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import binding, coldstart

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binds", type=int, default=600, help="bindings per side")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=9, help="interpreter starts per side")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name, result in (
        ("coldstart", coldstart.run(args.runs)),
        ("binding", binding.run(args.binds, args.threads)),
    ):
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"== {name}: {json.dumps(result, indent=2)}")


if __name__ == "__main__":
    main()
