"""The payout run over approved withdrawals on DynamoDB Local, one run.

- flat memory: the run over 10,000 and over 100,000 approved withdrawals (two tenants, seeded
  beforehand); peak of Python allocations during each run (tracemalloc), ratio 100k / 10k
  (target ≤ 1.2). Each size runs twice and the lower peak counts (like the best of repeated
  timings: a transient spike of the shared machine is not growth); every peak is reported;
- enqueue throughput: the run over the 100,000 (index pages read, one message per withdrawal
  spooled to the local queue the event runner drains, run progress written per page) against
  raw reads of the same index pages with boto3 and nothing else, measured before and after the
  run and averaged (ratio run / raw).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chalicelib.store import shards

TARGET_MEMORY_RATIO = 1.2
SMALL, LARGE = "wxbenchpay10k001", "wxbenchpay100k01"


def run(small: int = 10_000, large: int = 100_000) -> dict[str, Any]:
    from bench.binding import _setup
    from devtools.ddb_local import ensure_ddb_local, free_port, local_aws_env, start_ddb_local, stop

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    jar = ensure_ddb_local(root / ".local" / "ddb")
    proc = start_ddb_local(port, None, Path(tempfile.mkdtemp()) / "ddb.log", jar_dir=jar)
    spool = Path(tempfile.mkdtemp(prefix="payout-spool-"))
    try:
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(local_aws_env(endpoint))
        os.environ["LOCAL_QUEUE_DIR"] = str(spool)
        os.environ.pop("PAYOUT_QUEUE_URL", None)
        settings = _setup(endpoint)
        table = f"{settings.table_prefix}-withdrawals"
        seeded_at = time.perf_counter()
        _seed(endpoint, table, SMALL, small)
        _seed(endpoint, table, LARGE, large)
        seed_seconds = time.perf_counter() - seeded_at
        return _measure(endpoint, table, spool, small, large, seed_seconds)
    finally:
        stop(proc)


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


def _seed(endpoint: str, table: str, tenant: str, count: int) -> None:
    """`count` approved withdrawals of `tenant`, written with BatchWriteItem from four threads."""
    now = "2026-11-25T02:00:00.000000+00:00"

    def item(i: int) -> dict[str, Any]:
        wid = f"W{i:012d}{uuid.uuid4().hex[:8]}"
        promoter = f"u{i % 5000:015d}"
        return {
            "pk": {"S": f"{tenant}#{wid}"},
            "tenant": {"S": tenant},
            "withdrawal_id": {"S": wid},
            "promoter": {"S": promoter},
            "promoter_key": {"S": f"{tenant}#{promoter}"},
            "openid": {"S": f"o{promoter}"},
            "amount_fen": {"N": str(1000 + i % 9000)},
            "fee_fen": {"N": "0"},
            "state": {"S": "approved"},
            "state_key": {"S": shards.key(f"{tenant}#approved", wid)},
            "created_at": {"S": now[:-13] + f"{i % 60:02d}.{i:06d}+00:00"},
            "updated_at": {"S": now},
            "attempts": {"N": "0"},
            "version": {"N": "2"},
        }

    local = threading.local()

    def write(start: int) -> None:
        client = getattr(local, "client", None) or _client(endpoint)
        local.client = client
        requests = [{"PutRequest": {"Item": item(i)}} for i in range(start, min(start + 25, count))]
        while requests:
            answer = client.batch_write_item(RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(0, count, 25)))


def _raw_read(endpoint: str, table: str, tenant: str) -> tuple[int, float]:
    """Read the same index pages the run reads (every shard of the tenant's approved partition),
    with boto3 and nothing else."""
    from chalicelib.services.payouts import PAGE

    client = _client(endpoint)
    start = time.perf_counter()
    seen = 0
    for partition in shards.keys(f"{tenant}#approved"):
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": "by_state",
            "KeyConditionExpression": "state_key = :k",
            "ExpressionAttributeValues": {":k": {"S": partition}},
            "Limit": PAGE,
        }
        while True:
            answer = client.query(**kwargs)
            seen += len(answer["Items"])
            if "LastEvaluatedKey" not in answer:
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
    return seen, time.perf_counter() - start


def _payout_run(tenant: str, spool: Path) -> tuple[int, float, int]:
    """(enqueued, seconds, peak bytes) of one tenant's payout run; the spool is emptied after."""
    from chalicelib.clock import utcnow
    from chalicelib.services import payouts

    tracemalloc.start()
    start = time.perf_counter()
    result = payouts.run_tenant(tenant, utcnow(), "system:bench")
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    messages = 0
    for path in spool.rglob("*.json"):
        messages += path.read_text().count('"withdrawal"')
        path.unlink()
    enqueued = int(result["enqueued"]) if result else 0
    if messages != enqueued:
        raise RuntimeError(f"{messages} messages spooled for {enqueued} enqueued")
    return enqueued, seconds, peak


def _measure(endpoint: str, table: str, spool: Path, small: int, large: int, seed_seconds: float) -> dict[str, Any]:
    _payout_run(SMALL, spool)  # warm up: clients, connections, imports
    raw_before = _raw_read(endpoint, table, LARGE)
    small_runs = [_payout_run(SMALL, spool)]
    large_runs = [_payout_run(LARGE, spool)]
    raw_after = _raw_read(endpoint, table, LARGE)
    small_runs.append(_payout_run(SMALL, spool))
    large_runs.append(_payout_run(LARGE, spool))
    counts = {r[0] for r in small_runs} | {r[0] for r in large_runs} | {raw_before[0], raw_after[0]}
    if {r[0] for r in small_runs} != {small} or counts - {small} != {large}:
        raise RuntimeError("the runs or the raw reads did not see every approved withdrawal")
    raw_rate = 2 * large / (raw_before[1] + raw_after[1])
    run_rate = large / large_runs[0][1]  # the run timed between the two raw reads
    small_peak = min(r[2] for r in small_runs)
    large_peak = min(r[2] for r in large_runs)
    memory_ratio = large_peak / small_peak
    return {
        "approved_withdrawals": {"small": small, "large": large},
        "seed_seconds": round(seed_seconds, 1),
        "peak_bytes_small_runs": [r[2] for r in small_runs],
        "peak_bytes_large_runs": [r[2] for r in large_runs],
        "peak_bytes_small": small_peak,
        "peak_bytes_large": large_peak,
        "memory_ratio_large_to_small": round(memory_ratio, 3),
        "memory_target_ratio": TARGET_MEMORY_RATIO,
        "memory_meets_target": memory_ratio <= TARGET_MEMORY_RATIO,
        "run_enqueued_per_second": round(run_rate),
        "raw_reads_per_second": round(raw_rate),
        "ratio_run_to_raw_reads": round(run_rate / raw_rate, 3),
    }
