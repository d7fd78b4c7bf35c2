"""Export memory: 1,000,000 ledger rows against 100,000, peak memory ratio (target ≤ 1.2).

What runs is the service's real run loop (`chalicelib.services.exports.Run._rows`: encode each
row, send a part whenever the buffer reaches the part size, save a checkpoint after each part,
finish), writing real part files and the assembled CSV into a temporary directory. The rows come
from a generated iterator shaped like the ledger reader's rows, not from DynamoDB Local: writing a
million items into it would take longer than the whole benchmark suite (the reads are paged, 500
items at a time, so they add a constant, not a growing, amount). The export store is an in-memory
stand-in that accepts every checkpoint. Each size runs in a process of its own and its peak
memory is that process's peak resident set (`ru_maxrss`), interpreter and imports included, as
Lambda counts it (tracemalloc would be more precise but slows the loop four times).

    python -m bench --only export
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

TARGET = 1.2


class GeneratedLedger:
    """`count` ledger rows, resumable like the store's sources (position: rows taken)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    def rows(self) -> Iterator[dict[str, Any]]:
        while self.taken < self.count:
            n = self.taken
            self.taken += 1
            yield {
                "created_at": f"2026-11-{1 + n % 28:02d}T0{n % 10}:00:00.000000Z",
                "promoter": f"p{n % 5000:05d}",
                "promoter_name": f"推广员{n % 5000}",
                "order_id": f"o{n:09d}",
                "level": 1 + n % 3,
                "event": "paid",
                "state": "frozen",
                "amount_fen": (n * 37) % 100_000 - 500,
                "buyer": f"b{n % 20000}",
            }

    def position(self) -> dict[str, Any]:
        return {"n": self.taken}

    def progress(self) -> float:
        return self.taken / self.count


class AcceptingStore:
    """The export store's writes, accepted (the run holds its lease throughout)."""

    def __init__(self) -> None:
        self.checkpoints = 0

    def checkpoint(self, *args: Any) -> bool:
        self.checkpoints += 1
        return True

    def release(self, *args: Any) -> None:
        return None

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        return True


def export_once(rows: int) -> dict[str, Any]:
    """Run the CSV export loop over `rows` generated rows; its peak memory and time."""
    from chalicelib.services import exports
    from chalicelib.store import exports as store_exports
    from chalicelib.store.export_files import DirectoryFiles
    from chalicelib.store.exports import Export

    source = GeneratedLedger(rows)
    saved = (store_exports.source, exports._span)
    store_exports.source = lambda *args: source  # type: ignore[assignment]  # a generated stand-in, shaped like a Source
    exports._span = lambda *args: None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
            export = Export(
                tenant="wxbench",
                id=f"exp-{rows}",
                kind="ledger",
                format="csv",
                first_day="2026-11-01",
                last_day="2026-11-30",
                state="running",
                actor="bench",
                created_at="",
                updated_at="",
            )
            run = object.__new__(exports.Run)  # the real loop without the DynamoDB-backed set-up
            run.export, run.owner = export, "bench"
            run.store = AcceptingStore()  # type: ignore[assignment]
            run.files = DirectoryFiles(folder)
            run.part_bytes = 8 * 1024 * 1024
            run.max_rows = rows + 1
            run.deadline = time.monotonic() + 3600
            run.zone = ZoneInfo("Asia/Shanghai")
            started = time.perf_counter()
            result = run._rows()
            seconds = time.perf_counter() - started
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            size = run.files.path(f"exports/wxbench/exp-{rows}.csv").stat().st_size
    finally:
        store_exports.source, exports._span = saved
    if result["state"] != "done" or result["rows"] != rows:
        raise RuntimeError(f"the export did not finish with every row: {result}")
    return {"rows": rows, "peak_bytes": peak, "seconds": round(seconds, 2), "file_bytes": size}


def measured(rows: int) -> dict[str, Any]:
    """`export_once(rows)` in a fresh interpreter (so one size's peak does not hide the other's)."""
    env = {**os.environ, "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "fenxiao"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.export", "--rows", str(rows)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run(small: int = 100_000, large: int = 1_000_000) -> dict[str, Any]:
    small_run = measured(small)
    large_run = measured(large)
    ratio = large_run["peak_bytes"] / small_run["peak_bytes"]
    return {
        "what": "peak RSS of the CSV export loop (a process per size), generated ledger rows, 8 MiB parts",
        "small": small_run,
        "large": large_run,
        "peak_ratio": round(ratio, 3),
        "target": f"<= {TARGET}",
        "ok": ratio <= TARGET,
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="one export of this many rows (a child of `run`)")
    args = parser.parse_args()
    print(json.dumps(export_once(args.rows) if args.rows else run()))
