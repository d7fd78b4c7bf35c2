"""The commission pipeline against raw DynamoDB Local transactions of the same items, one run.

- pipeline: orders placed beforehand are moved to paid as the payment notification does (one
  conditional, versioned update each with its audit record), then the local event runner
  delivers the orders stream to the app's handler with Lambda's ParallelizationFactor (4
  concurrent batches per shard); timed from the first order write to the last ledger write
  (the existing comparison: the two stages one after the other). Beside it: each stage alone
  against raw, the stream consumed while the payments are written (one Python process, so the
  writer and the workers share one interpreter lock, unlike Lambda), and the payments written
  by a process of their own while this one consumes the stream (closer to Lambda, but on this
  2-core machine the two processes and DynamoDB Local's JVM compete for the same cores);
- raw: one TransactWriteItems per order writing the same items (the paid order, three ledger
  lines, three account updates, the sales counter) into twin tables nobody consumes;
  pipeline and raw run in interleaved rounds, so the shared machine's drift hits both;
- writes per paid order: DynamoDB write requests and items (transactional items count twice
  in write units) seen by botocore while the pipeline runs;
- hot promoter: orders whose level 1 is the same promoter, paid beforehand, then the stream
  delivered by 4 concurrent batch workers: failures reported back to the runner (0), records
  parked (0, in the app's parked table and the runner's dead-letter file), account item
  writes against orders / batch size + 1 per worker, and the promoter's pending total;
- profile: when the ratio misses its target, one more stream round (one worker, so cProfile
  sees it) is profiled and the heaviest calls of the commission engine are reported.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.binding import _twin

TARGET = 0.8
WORKERS = 4  # Lambda's ParallelizationFactor on the orders stream (infra/merge-prod.json)
BATCH = 30  # the orders stream's batch size
ROUNDS = 3
PROFILED = 2 * BATCH  # orders of the profiled stream round


def run(orders: int, hot_orders: int, profile: bool | None = None) -> dict[str, Any]:
    from bench.binding import _setup
    from devtools.ddb_local import ensure_ddb_local, free_port, local_aws_env, start_ddb_local, stop

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    jar = ensure_ddb_local(root / ".local" / "ddb")
    proc = start_ddb_local(port, None, Path(tempfile.mkdtemp()) / "ddb.log", jar_dir=jar)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(local_aws_env(endpoint))
        settings = _setup(endpoint)
        return _measure(endpoint, settings.table_prefix, orders, hot_orders, profile)
    finally:
        stop(proc)


class _Calls:
    """Counts DynamoDB write requests and written items made through botocore."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.operations: Counter[str] = Counter()  # every API call, reads included
        self.items = 0
        self.write_units = 0
        self.account_writes = 0
        self.hot_key = ""
        self.cancelled = 0  # transactions refused (conflicts and failed conditions)
        self.paused = False  # while the raw side runs
        self._original: Any = None

    def __enter__(self) -> _Calls:
        import botocore.client

        self._original = botocore.client.BaseClient._make_api_call
        calls = self

        def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
            calls.record(operation, params)
            try:
                return calls._original(client, operation, params)
            except Exception as exc:
                if "TransactionCanceled" in str(exc) and not calls.paused:
                    calls.cancelled += 1
                raise

        botocore.client.BaseClient._make_api_call = counting
        return self

    def __exit__(self, *exc: object) -> None:
        import botocore.client

        botocore.client.BaseClient._make_api_call = self._original

    def record(self, operation: str, params: dict[str, Any]) -> None:
        if self.paused:
            return
        self.operations[operation] += 1
        if operation == "TransactWriteItems":
            self.requests[operation] += 1
            items = params["TransactItems"]
            self.items += len(items)
            self.write_units += 2 * sum(1 for i in items if "ConditionCheck" not in i)
            self.account_writes += sum(
                1 for i in items if self.hot_key and self.hot_key in str(i.get("Update", {}).get("Key"))
            )
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self.requests[operation] += 1
            self.items += 1
            self.write_units += 1
            self.account_writes += int(bool(self.hot_key) and self.hot_key in str(params.get("Key")))


def _people(tenant: str, count: int) -> list[str]:
    from chalicelib.entities import Principal, Role
    from chalicelib.services import logins, referrals, shares

    ids = [logins.login(f"dev-bench-{uuid.uuid4().hex[:8]}", tenant).user.id for _ in range(count)]
    for parent, child in itertools.pairwise(ids):
        code = shares.create(Principal(tenant, parent, Role.USER), None, None).code
        referrals.scan(Principal(tenant, child, Role.USER), code)
    return ids


class _Failures:
    """Wraps a runner's stream handlers: counts invocations, reported failures and raised errors."""

    def __init__(self, runner: Any) -> None:
        self.invocations = 0
        self.reported = 0
        self.raised = 0
        self._lock = threading.Lock()
        for job in runner.jobs:
            if job.kind == "dynamodb":
                job.handler = self._wrap(job.handler)

    def _wrap(self, handler: Any) -> Any:
        def counted(event: dict[str, Any], context: Any) -> Any:
            try:
                result = handler(event, context)
            except Exception:
                with self._lock:
                    self.invocations += 1
                    self.raised += 1
                raise
            failed = len(result.get("batchItemFailures") or []) if isinstance(result, dict) else 0
            with self._lock:
                self.invocations += 1
                self.reported += failed
            return result

        return counted

    @property
    def failures(self) -> int:
        return self.reported + self.raised


def _runner(endpoint: str, prefix: str, workers: int) -> Any:
    from app import app
    from devtools.runner import EventRunner

    return EventRunner(
        app,
        table_name_for=lambda logical: f"{prefix}-{logical}",
        endpoint_url=endpoint,
        state_dir=Path(tempfile.mkdtemp()),
        max_retries=6,  # Lambda's 1 + MaximumRetryAttempts (5); the app parks at its 5th failure
        parallelization=workers,
    )


def _dead_letters(runner: Any) -> int:
    folder = Path(runner.state_dir) / "dlq"
    return sum(len(path.read_text().splitlines()) for path in folder.glob("*.jsonl")) if folder.is_dir() else 0


def _quiet() -> Any:
    """Powertools prints a metrics blob every 100 metrics outside a handler: keep the report readable."""
    return contextlib.redirect_stdout(io.StringIO())


def _consume_while(runner: Any, work: Any) -> float:
    """Run ``work()`` while the runner polls the streams (as Lambda does), then drain; return seconds."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if runner.poll_once() == 0:
                stop.wait(0.02)

    consumer = threading.Thread(target=poll, name="bench-consumer", daemon=True)
    start = time.perf_counter()
    consumer.start()
    try:
        work()
    finally:
        stop.set()
        consumer.join()
    runner.drain(timeout=900)
    return time.perf_counter() - start


def _pay_in_child(order_ids: list[str], ready: Any, go: Any) -> None:
    """A separate process marking orders paid, as the API function taking payment notifications
    runs apart from the stream functions in Lambda (imports done before the clock starts)."""
    from chalicelib.store import get_store

    get_store()
    with _quiet():
        ready.set()
        go.wait()
        for order_id in order_ids:
            _Bench.mark_paid(order_id)


def _pay_apart(runner: Any, order_ids: list[str]) -> float:
    """Seconds from the first payment to the last ledger write, the payments written by another
    process while this one consumes the stream with the runner's concurrent batches (as the API
    and stream functions run apart in Lambda; here they share the machine's two cores with
    DynamoDB Local)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    child = context.Process(target=_pay_in_child, args=(order_ids, ready, go), daemon=True)
    child.start()
    ready.wait(120)

    def work() -> None:
        go.set()
        child.join()

    return _consume_while(runner, work)


def _engine_profile(runner: Any, pay: Any, order_ids: list[str]) -> dict[str, Any]:
    """Profile one stream round of ``order_ids`` (paid first, not profiled) with one worker."""
    import cProfile
    import pstats

    for order_id in order_ids:
        pay(order_id)
    profiler = cProfile.Profile()
    with _Calls() as api:
        start = time.perf_counter()
        profiler.enable()
        runner.drain(timeout=900)
        profiler.disable()
        total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, _tt, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path.endswith(("services/commissions.py", "store/ledger.py", "store/base.py", "events/parking.py")):
            rows.append((cumulative, f"{Path(path).parent.name}/{Path(path).name}:{line} {name}", calls))
    rows.sort(reverse=True)
    spent = Counter[str]()
    for (path, _line, name), (_, _calls, _tt, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path.endswith("botocore/client.py") and name == "_make_api_call":
            spent["botocore_api_calls_s"] += cumulative
        if name == "sleep" and "time" in path:
            spent["sleep_s"] += cumulative
    return {
        "orders": len(order_ids),
        "stream_s": round(total, 2),
        "share_of_stream_in_botocore_api_calls": round(spent["botocore_api_calls_s"] / total, 3) if total else None,
        "share_of_stream_sleeping": round(spent["sleep_s"] / total, 3) if total else None,
        "api_calls_per_order": {op: round(n / len(order_ids), 2) for op, n in sorted(api.operations.items())},
        "top_cumulative_s": [f"{cum:.2f}s {calls}x {where}" for cum, where, calls in rows[:14]],
    }


TENANT = "wxbench000000001"


class _Bench:
    """The commission bench's fixtures on one DynamoDB Local: tenant, plan, people, runner."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        from chalicelib.clock import utcnow
        from chalicelib.entities import AuditEvent, Principal, Product, Role
        from chalicelib.services import plans
        from chalicelib.store import get_store

        os.environ["SANDBOX_KEYS_DIR"] = tempfile.mkdtemp()
        owner = Principal(TENANT, "bench", Role.OWNER)
        plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 3000})["version"])
        now = utcnow()
        event = AuditEvent(entity="product:tea", action="product.created", actor="system:bench", data={})
        get_store().products.create(Product(TENANT, "tea", "tea", 9_900, True, None, now, now), event)
        self.endpoint, self.prefix = endpoint, prefix
        self.runner = _runner(endpoint, prefix, WORKERS)
        self.counted = _Failures(self.runner)

    def buyers_under(self, chain: list[str], count: int) -> list[str]:
        from chalicelib.entities import Principal, Role
        from chalicelib.services import logins, referrals, shares

        code = shares.create(Principal(TENANT, chain[-1], Role.USER), None, None).code
        found = []
        for _ in range(count):
            uid = logins.login(f"dev-buyer-{uuid.uuid4().hex[:8]}", TENANT).user.id
            referrals.scan(Principal(TENANT, uid, Role.USER), code)
            found.append(uid)
        return found

    def place(self, buyers: list[str], count: int) -> list[Any]:
        from chalicelib.entities import Principal, Role
        from chalicelib.services import orders as order_service

        with _quiet():
            placed = [
                order_service.place(Principal(TENANT, buyers[i % len(buyers)], Role.USER), [("tea", 1)], None, None)
                for i in range(count)
            ]
            self.runner.drain(timeout=900)
        return placed

    @staticmethod
    def mark_paid(order_id: str) -> None:
        """What the payment notification writes: the order moved to paid (one conditional update)."""
        from chalicelib.clock import iso, utcnow
        from chalicelib.entities import AuditEvent
        from chalicelib.orders import OrderStatus
        from chalicelib.store import get_store

        at = utcnow()
        data = {"transaction_id": f"tx{order_id}", "amount_fen": 9_900}
        paid_event = AuditEvent(entity=f"order:{order_id}", action="order.paid", actor="system:wechatpay", data=data)
        extra = {"paid_at": iso(at), "transaction_id": f"tx{order_id}"}
        get_store().orders.transition(
            TENANT, order_id, (OrderStatus.CREATED,), OrderStatus.PAID, when=at, event=paid_event, extra=extra
        )

    def raw_writer(self, chains: list[list[str]]) -> Any:
        """Return ``write(i)``: one transaction of the items order i leaves, into twin tables nobody consumes."""
        import boto3

        client = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name="us-east-1")
        raw_orders, raw_ledger, raw_accounts, raw_stats = (
            _twin(client, f"{self.prefix}-{t}") for t in ("orders", "ledger", "accounts", "stats")
        )
        run_id = uuid.uuid4().hex[:6]

        def raw_order(i: int) -> None:
            chain = chains[i % len(chains)]
            order_id = f"raw{run_id}{i}"
            items: list[dict[str, Any]] = [
                {"Put": {"TableName": raw_orders, "Item": {"pk": {"S": f"{TENANT}#{order_id}"}, "status": {"S": "paid"},
                 "amount_fen": {"N": "9900"}, "lines": {"S": "[]"}, "attribution": {"S": "{}"}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
            ]  # fmt: skip
            for level, promoter in enumerate(reversed(chain), 1):
                items.append({"Put": {"TableName": raw_ledger, "Item": {"pk": {"S": f"{TENANT}#{promoter}"},
                              "sk": {"S": f"{order_id}#{level}#paid"}, "order_key": {"S": f"{TENANT}#{order_id}"},
                              "amount_fen": {"N": "990"}, "state": {"S": "pending"}, "trace": {"S": "{}"}},
                              "ConditionExpression": "attribute_not_exists(sk)"}})  # fmt: skip
                items.append({"Update": {"TableName": raw_accounts, "Key": {"pk": {"S": f"{TENANT}#{promoter}"}},
                              "UpdateExpression": "ADD pending_fen :a",
                              "ExpressionAttributeValues": {":a": {"N": "990"}}}})  # fmt: skip
            items.append({"Update": {"TableName": raw_stats, "Key": {"pk": {"S": f"{TENANT}#l1sales#{chain[-1]}"},
                          "period": {"S": "2026-11"}}, "UpdateExpression": "ADD sales_fen :a",
                          "ExpressionAttributeValues": {":a": {"N": "9900"}}}})  # fmt: skip
            client.transact_write_items(TransactItems=items)

        return raw_order

    def pipeline_against_raw(self, orders: int, profile: bool | None) -> dict[str, Any]:
        """Interleaved rounds: overlapped pipeline, raw transactions, staged pipeline."""
        chains = [_people(TENANT, 3) for _ in range(10)]
        buyers = [b for chain in chains for b in self.buyers_under(chain, max(1, orders // 10 // 5))]
        per_round = max(1, orders // ROUNDS)
        waiting = [order.id for order in self.place(buyers, 3 * per_round * ROUNDS + PROFILED)]
        raw_order = self.raw_writer(chains)
        overlapped_s = staged_s = written_s = raw_s = pipelined_s = 0.0
        with _Calls() as calls:
            for r in range(ROUNDS):
                chunk, staged = waiting[3 * r * per_round :][:per_round], waiting[(3 * r + 1) * per_round :][:per_round]
                apart = waiting[(3 * r + 2) * per_round :][:per_round]
                calls.paused = True
                with _quiet():
                    pipelined_s += _pay_apart(self.runner, apart)
                calls.paused = False
                overlapped_s += _consume_while(self.runner, lambda chunk=chunk: [self.mark_paid(o) for o in chunk])
                calls.paused = True
                start = time.perf_counter()
                for i in range(r * per_round, (r + 1) * per_round):
                    raw_order(i)
                raw_s += time.perf_counter() - start
                calls.paused = False
                start = time.perf_counter()
                for order_id in staged:
                    self.mark_paid(order_id)
                written_s += time.perf_counter() - start
                self.runner.drain(timeout=900)
                staged_s += time.perf_counter() - start
        paid = per_round * ROUNDS
        raw_rate = paid / raw_s
        ratio = (paid / staged_s) / raw_rate
        result: dict[str, Any] = {
            "ratio_pipeline_to_raw": round(ratio, 3),
            "pipeline": "payments written, then the stream delivered (the issue's comparison)",
            "target": f">= {TARGET}",
            "meets_target": ratio >= TARGET,
            "ratio_pipeline_payments_in_their_own_process_to_raw": round((paid / pipelined_s) / raw_rate, 3),
            "ratio_pipeline_to_raw_stream_consumed_while_paying": round((paid / overlapped_s) / raw_rate, 3),
            "ratio_stream_stage_alone_to_raw": round((paid / (staged_s - written_s)) / raw_rate, 3),
            "ratio_order_writes_alone_to_raw": round((paid / written_s) / raw_rate, 3),
            "detail": {
                "orders_per_side": paid,
                "rounds": ROUNDS,
                "stream_workers": WORKERS,
                "pipeline_orders_per_s": round(paid / staged_s, 1),
                "pipeline_payments_apart_orders_per_s": round(paid / pipelined_s, 1),
                "of_which_order_writes_s": round(written_s, 2),
                "of_which_stream_s": round(staged_s - written_s, 2),
                "pipeline_consumed_while_paying_orders_per_s": round(paid / overlapped_s, 1),
                "raw_transactions_per_s": round(raw_rate, 1),
                "pipeline_failures_reported": self.counted.failures,
                "write_requests_per_paid_order": {
                    op: round(n / (2 * paid), 2) for op, n in sorted(calls.requests.items())
                },
                "items_written_per_paid_order": round(calls.items / (2 * paid), 2),
                "write_units_per_paid_order_est": round(calls.write_units / (2 * paid), 2),
                "transactions_cancelled_per_paid_order": round(calls.cancelled / (2 * paid), 3),
            },
        }
        if profile or (profile is None and ratio < TARGET):
            result["profile_stream_one_worker"] = self.profile(waiting[-PROFILED:])
        return result

    def profile(self, order_ids: list[str]) -> dict[str, Any]:
        """The engine's profile over one stream round with one worker (in this thread, where cProfile looks)."""
        streams = [job for job in self.runner.jobs if job.kind == "dynamodb"]
        for job in streams:
            job.parallelization = 1
        try:
            return _engine_profile(self.runner, self.mark_paid, order_ids)
        finally:
            for job in streams:
                job.parallelization = WORKERS

    def hot_promoter(self, hot_orders: int) -> dict[str, Any]:
        """Orders whose level 1 is one promoter, paid beforehand, then the stream by 4 workers."""
        from chalicelib.services import orders as order_service
        from chalicelib.store import get_store
        from chalicelib.wechat import get_pay

        hot_chain = _people(TENANT, 3)
        hot_buyers = self.buyers_under(hot_chain, 20)
        pay = get_pay(TENANT)
        placed = self.place(hot_buyers, hot_orders)
        with _quiet():
            for order in placed:
                user = get_store().users.get(TENANT, order.buyer)
                openid = user.openid if user else ""
                headers, body = pay.notification_for(order.id, order.amount_fen, openid)  # type: ignore[attr-defined]
                order_service.payment_notification(TENANT, headers, body)
        before = (self.counted.failures, self.counted.invocations)
        with _Calls() as hot:
            hot.hot_key = f"{TENANT}#{hot_chain[-1]}"
            start = time.perf_counter()
            self.runner.drain(timeout=900)
            hot_s = time.perf_counter() - start
        account = get_store().ledger.account(TENANT, hot_chain[-1])
        bound = hot_orders // BATCH + WORKERS
        return {
            "orders": hot_orders,
            "workers": WORKERS,
            "batch_size": BATCH,
            "failures": self.counted.failures - before[0],
            "parked": get_store().parked.waiting(TENANT, "orders") + _dead_letters(self.runner),
            "account_item_writes": hot.account_writes,
            "account_writes_bound": f"<= {hot_orders}/{BATCH} + 1 per worker = {bound}",
            "account_writes_to_bound": round(hot.account_writes / bound, 3),
            "meets_bound": hot.account_writes <= bound,
            "transactions_cancelled_retried": hot.cancelled,
            "invocations": self.counted.invocations - before[1],
            "stream_s": round(hot_s, 2),
            "pending_fen_to_expected": round(int(account["pending_fen"]) / (hot_orders * 990), 6),
        }


def _measure(endpoint: str, prefix: str, orders: int, hot_orders: int, profile: bool | None) -> dict[str, Any]:
    with _quiet():  # the app's metric blobs
        bench = _Bench(endpoint, prefix)
        result = bench.pipeline_against_raw(orders, profile)
        result["hot_promoter"] = bench.hot_promoter(hot_orders)
    return result
