"""Cold start: importing `app` in a fresh interpreter against `import boto3` alone, interleaved."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


def _time(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT)
    return time.perf_counter() - start


def run(runs: int) -> dict[str, Any]:
    _time("import app")  # warm the file cache for both
    _time("import boto3")
    app_times, boto_times, empty_times = [], [], []
    for _ in range(runs):
        app_times.append(_time("import app"))
        boto_times.append(_time("import boto3"))
        empty_times.append(_time("pass"))
    app_s, boto_s, empty_s = (statistics.median(t) for t in (app_times, boto_times, empty_times))
    ratio = app_s / boto_s
    return {
        "runs": runs,
        "median_import_app_s": round(app_s, 4),
        "median_import_boto3_s": round(boto_s, 4),
        "median_empty_interpreter_s": round(empty_s, 4),
        "ratio_app_to_boto3": round(ratio, 3),
        "ratio_net_of_interpreter": round((app_s - empty_s) / (boto_s - empty_s), 3),
        "target": f"<= {TARGET}",
        "meets_target": ratio <= TARGET,
    }
