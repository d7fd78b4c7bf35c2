"""`make load`: the whole local stack under a mini-program's traffic, measured (issue 10 §7).

It starts its own stack on free ports (DynamoDB Local in memory, `chalice local` through
`bench.serve`, the event runner in a thread of this process, as `make run` does), then drives it
over HTTP from a thread pool:

1. login: every promoter logs in with a sandbox code `dev-<name>`, paced under the per-address
   login limit (600 a minute: `chalice local` reports every caller as 127.0.0.1);
2. teams: promoters form three-level teams (one head, 3 level-1, 9 level-2, 27 level-3 per 40),
   each parent shares once and its children scan the code, level by level;
3. orders, first wave: buyers below the heads order, pay (the WeChat Pay twin's sandbox route,
   whose signed notification reaches the real callback), some confirm receipt, some are refunded
   in part or in full by finance, promoters look at their account, commissions and orders;
4. the owner runs `settle`; second wave of orders with withdrawals mixed in (auto-approved);
5. the owner runs `payout_run`; the transfer twin waits for each user, who confirms.

Reported: requests/s, p50/p95/p99 per route, status codes (server errors: the target is 0); a
raw DynamoDB Local GetItem round trip measured in the same run (idle and under the load) and
each route's latency as a ratio of it; then, with the streams drained and the refunds finished,
money conservation for every promoter (`assert_money_conserved`, the relation the withdrawal
and lifecycle tests check) and the commission of every paid order (each level's line, at the
plan's rate). The meter's counts (`bench.meter`) feed the cost model (`bench.cost`). Printed and
written to bench/results/load.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import quantiles
from types import SimpleNamespace
from typing import Any

from bench.meter import Meter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
TENANT = "wxload0000000001"
PASSWORD = "load-pw-0123456789"  # noqa: S105 - the run's own operators on a throwaway database
RATES_BPS = (1000, 500, 200)
PRODUCTS = {"tea": 9_900, "serum": 12_345, "mooncake": 2_999}  # odd prices exercise rounding
TEAM = 40  # 1 head + 3 + 9 + 27: member k's parent is (k - 1) // 3
LOGINS_PER_MINUTE = 590  # under chalice local's single address's limit of 600 a minute
WITHDRAW_MIN_FEN = 100


@dataclass(frozen=True)
class Options:
    promoters: int = 5_000
    orders: int = 10_000
    workers: int = 8
    receipt_share: float = 0.3
    refund_share: float = 0.1
    withdrawals: int | None = None  # default: one promoter in ten
    seed: int = 7


# ---------------------------------------------------------------------- measuring


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 (ms) of `values`; a single value is all three."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    if len(values) == 1:
        return dict.fromkeys(("p50", "p95", "p99"), round(values[0], 2))
    cuts = quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}


@dataclass
class Recorder:
    """Latency and status per route, thread-safe."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, status: str, ms: float) -> None:
        with self.lock:
            self.latencies[route].append(ms)
            self.statuses[route][status] += 1

    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s.startswith("5") or s == "transport")

    def client_errors(self) -> dict[str, int]:
        return {
            f"{route} {status}": n
            for route, c in self.statuses.items()
            for status, n in c.items()
            if status.startswith("4")
        }


class ApiError(Exception):
    def __init__(self, route: str, status: int, body: Any) -> None:
        super().__init__(f"{route}: {status} {body}")
        self.status, self.body = status, body


class Client:
    """HTTP/1.1 keep-alive connections to `chalice local`, one per thread."""

    def __init__(self, port: int, recorder: Recorder) -> None:
        self.port = port
        self.recorder = recorder
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return conn

    def call(self, method: str, path: str, route: str, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        """One request; returns the JSON body of a 2xx, raises ApiError otherwise (recorded either way)."""
        sent = {"X-Appid": TENANT, "Content-Type": "application/json", **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        payload = json.dumps(body).encode() if body is not None else None
        start = time.perf_counter()
        try:
            conn = self._connection()
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._local.conn = None
            self.recorder.add(route, "transport", (time.perf_counter() - start) * 1000)
            raise ApiError(route, 0, repr(exc)) from exc
        self.recorder.add(route, str(response.status), (time.perf_counter() - start) * 1000)
        if response.getheader("Connection", "").lower() == "close":
            self._local.conn = None
        data = json.loads(raw) if raw else None
        if not 200 <= response.status < 300:
            raise ApiError(route, response.status, data)
        return data


class LoginPacer:
    """At most `per_minute` logins in each clock minute (the limit's fixed windows)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0

    def wait(self) -> None:
        while True:
            with self._lock:
                window = int(time.time()) // 60
                if window != self._window:
                    self._window, self._used = window, 0
                if self._used < self.per_minute:
                    self._used += 1
                    return
                pause = (window + 1) * 60 - time.time() + 0.05
            time.sleep(max(pause, 0.05))


class RawProbe:
    """GetItem round trips straight to DynamoDB Local (boto3, no app), uncounted by the meter."""

    def __init__(self, endpoint: str, table: str, key: dict[str, Any], meter: Meter) -> None:
        import boto3

        self.client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        self.table, self.key, self.meter = table, key, meter
        self.idle: list[float] = []
        self.loaded: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def once(self) -> float:
        with self.meter.uncounted():
            start = time.perf_counter()
            self.client.get_item(TableName=self.table, Key=self.key)
            return (time.perf_counter() - start) * 1000

    def measure_idle(self, count: int) -> None:
        for _ in range(20):
            self.once()  # warm the connection
        self.idle = [self.once() for _ in range(count)]

    def start(self, interval: float = 0.05) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.loaded.append(self.once())

        self._thread = threading.Thread(target=loop, name="raw-getitem", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


# ---------------------------------------------------------------------- the stack


@dataclass
class LocalStack:
    """DynamoDB Local, `bench.serve` (chalice local with a meter) and the event runner."""

    endpoint: str
    api_port: int
    prefix: str
    runner: Any
    meter: Meter
    meter_file: Path
    processes: list[subprocess.Popen[bytes]]
    stop_runner: threading.Event
    runner_thread: threading.Thread

    def api_snapshot(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the API process for its meter's counts."""
        self.meter_file.unlink(missing_ok=True)
        os.kill(self.processes[-1].pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.meter_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the API process wrote no meter snapshot")
            time.sleep(0.1)
        return dict(json.loads(self.meter_file.read_text()))


def _app_env(endpoint: str, prefix: str, api_url: str, work: Path) -> dict[str, str]:
    from devtools.ddb_local import local_aws_env

    return {
        **local_aws_env(endpoint),
        "TABLE_PREFIX": prefix,
        "JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "WECHAT_MODE": "sandbox",
        "PUBLIC_BASE_URL": api_url,
        "SANDBOX_KEYS_DIR": str(work / "wechatpay"),
        "SANDBOX_REFUND_SECONDS": "0",
        "LOCAL_QUEUE_DIR": str(work / "queues"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "fenxiao",
        "POWERTOOLS_METRICS_NAMESPACE": "FenxiaoLoad",
    }


def _seed() -> None:
    """The tenant and its owner and finance operators, written as the admin CLI would."""
    from chalicelib.auth import hash_password
    from chalicelib.clock import utcnow
    from chalicelib.entities import Admin, Role, Tenant
    from chalicelib.store import get_store

    store = get_store()
    store.tenants.put(Tenant(TENANT, "Load test"), utcnow())
    for role in (Role.OWNER, Role.FINANCE):
        store.admins.put(Admin(TENANT, role.value, hash_password(PASSWORD), role), utcnow())


def _wrap_handlers(runner: Any, meter: Meter) -> None:
    """Time every stream, queue and scheduled handler the runner calls (one Lambda invocation each)."""
    for job in runner.jobs:
        handler = job.handler

        def timed(event: Any, context: Any, _handler: Any = handler, _name: str = job.name) -> Any:
            with meter.invocation(_name):
                return _handler(event, context)

        job.handler = timed


@contextlib.contextmanager
def local_stack(meter: Meter, work: Path) -> Iterator[LocalStack]:
    from devtools.ddb_local import ensure_ddb_local, free_port, start_ddb_local, stop
    from devtools.stack import StackConfig, stop_group, wait_for_api

    ddb_port, api_port = free_port(), free_port()
    ddb = start_ddb_local(ddb_port, None, work / "ddb.log", jar_dir=ensure_ddb_local(ROOT / ".local" / "ddb"))
    processes: list[subprocess.Popen[bytes]] = [ddb]
    stop_runner = threading.Event()
    runner_thread: threading.Thread | None = None
    saved_env = dict(os.environ)  # put back on exit: a test process goes on with its own stack
    try:
        endpoint = f"http://127.0.0.1:{ddb_port}"
        prefix = f"load{uuid.uuid4().hex[:6]}"
        os.environ.update(_app_env(endpoint, prefix, f"http://127.0.0.1:{api_port}", work))
        os.environ.pop("DEFAULT_TENANT", None)  # production's shape: every request names its tenant
        from chalicelib.caches import clear_all

        clear_all()
        from devtools.tables import create_all_tables

        create_all_tables()
        _seed()
        meter_file = work / "api-meter.json"
        with (work / "api.log").open("wb") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "bench.serve", "--port", str(api_port), "--meter-out", str(meter_file)],
                cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )  # fmt: skip
        processes.append(api)
        from app import app
        from chalicelib.wechat.outbox import deliver_due
        from devtools.runner import EventRunner

        runner = EventRunner(
            app,
            table_name_for=lambda logical: f"{prefix}-{logical}",
            endpoint_url=endpoint,
            state_dir=work / "runner",
            spool_dir=work / "queues",
            notifications=deliver_due,
            max_retries=6,  # Lambda's 1 + MaximumRetryAttempts (5): the app parks at its 5th failure
        )
        _wrap_handlers(runner, meter)
        wait_for_api(StackConfig(api_port=api_port, ddb_port=ddb_port), api)
        runner_thread = threading.Thread(target=runner.run_forever, args=(stop_runner, 0.1), daemon=True)
        runner_thread.start()
        yield LocalStack(endpoint, api_port, prefix, runner, meter, meter_file, processes, stop_runner, runner_thread)
    finally:
        stop_runner.set()
        if runner_thread is not None:
            runner_thread.join(timeout=30)
        for proc in processes[1:]:
            stop_group(proc)
        stop(ddb)
        os.environ.clear()
        os.environ.update(saved_env)
        from chalicelib.caches import clear_all

        clear_all()  # settings, store and clients were built for the load's tables


# ---------------------------------------------------------------------- the scenario


@dataclass
class Promoter:
    index: int
    name: str
    parent: int | None
    depth: int
    token: str = ""
    id: str = ""


@dataclass
class Placed:
    id: str
    buyer: int
    amount_fen: int
    paid: bool = False
    refunded_fen: int = 0


class Scenario:
    """The traffic of one run; `promoters`, `orders` and `withdrawals` remember what was done."""

    def __init__(self, options: Options, client: Client, pool: ThreadPoolExecutor, log: Callable[[str], None]) -> None:
        self.o = options
        self.client = client
        self.pool = pool
        self.log = log
        self.random = random.Random(options.seed)
        self.run = uuid.uuid4().hex[:6]
        self.promoters = [self._member(i) for i in range(options.promoters)]
        self.orders: list[Placed] = []
        self.withdrawals: list[tuple[int, str]] = []
        self.failures: list[str] = []
        self.late_paid = 0
        self.owner = self.finance = ""
        self._lock = threading.Lock()

    def _member(self, index: int) -> Promoter:
        k = index % TEAM
        parent = None if k == 0 else index - k + (k - 1) // 3
        depth = 0 if k == 0 else 1 if k <= 3 else 2 if k <= 12 else 3
        return Promoter(index, f"load-{index}", parent, depth)

    def upline(self, index: int) -> list[Promoter]:
        """The buyer's level 1, 2, 3 promoters, nearest first."""
        found: list[Promoter] = []
        parent = self.promoters[index].parent
        while parent is not None and len(found) < 3:
            found.append(self.promoters[parent])
            parent = self.promoters[parent].parent
        return found

    def _all(self, work: Callable[[Any], None], items: list[Any]) -> None:
        """Run `work(item)` for every item on the pool; an unexpected answer is noted, not raised."""

        def guarded(item: Any) -> None:
            try:
                work(item)
            except ApiError as exc:
                with self._lock:
                    self.failures.append(str(exc)[:300])

        list(self.pool.map(guarded, items))

    # -- set-up by the operators

    def operators(self) -> None:
        login = "/v1/admin/auth/login"
        route = f"POST {login}"
        self.owner = self.client.call(
            "POST", login, route, body={"username": "owner", "password": PASSWORD, "appid": TENANT}
        )["token"]
        self.finance = self.client.call(
            "POST", login, route, body={"username": "finance", "password": PASSWORD, "appid": TENANT}
        )["token"]
        for pid, price in PRODUCTS.items():
            body = {"id": pid, "name": pid, "price_fen": price}
            self.client.call("POST", "/v1/admin/products", "POST /v1/admin/products", self.owner, body)
        plan = {"rates_bps": list(RATES_BPS), "cap_bps": 3000, "settle_after_days": 0}
        version = self.client.call("POST", "/v1/admin/plans", "POST /v1/admin/plans", self.owner, plan)["version"]
        route = "POST /v1/admin/plans/{version}/activate"
        self.client.call("POST", f"/v1/admin/plans/{version}/activate", route, self.owner)
        rules = {"auto_approve_below_fen": 100_000_000, "count_per_day": 1000, "max_per_day_fen": 100_000_000}
        route = "PATCH /v1/admin/settings/withdrawals"
        self.client.call("PATCH", "/v1/admin/settings/withdrawals", route, self.finance, rules)

    def job(self, name: str) -> Any:
        return self.client.call("POST", f"/v1/admin/jobs/{name}/run", "POST /v1/admin/jobs/{name}/run", self.owner)

    # -- promoters and teams

    def login_all(self) -> None:
        pacer = LoginPacer(LOGINS_PER_MINUTE)

        def login(p: Promoter) -> None:
            pacer.wait()
            body = {"code": f"dev-{p.name}-{self.run}", "appid": TENANT}
            answer = self.client.call("POST", "/v1/auth/login", "POST /v1/auth/login", body=body)
            p.token, p.id = answer["token"], answer["user"]["id"]

        self._all(login, self.promoters)

    def bind_teams(self) -> None:
        codes: dict[int, str] = {}

        def share(p: Promoter) -> None:
            codes[p.index] = self.client.call("POST", "/v1/shares", "POST /v1/shares", p.token, {"channel": "moments"})[
                "code"
            ]

        parents = sorted({p.parent for p in self.promoters if p.parent is not None and p.token})
        self._all(share, [self.promoters[i] for i in parents])

        def scan(p: Promoter) -> None:
            answer = self.client.call(
                "POST", "/v1/referrals/scan", "POST /v1/referrals/scan", p.token, {"code": codes[p.parent or 0]}
            )
            if answer.get("status") != "bound":
                raise ApiError("POST /v1/referrals/scan", 200, answer)

        for depth in (1, 2, 3):  # a child copies its parent's upline: parents first
            self._all(scan, [p for p in self.promoters if p.depth == depth and p.token and p.parent in codes])

    # -- orders

    def _buyers(self) -> list[int]:
        buyers = [p.index for p in self.promoters if p.depth > 0 and p.token]
        self.random.shuffle(buyers)
        return buyers

    def order_wave(self, count: int, withdraw: list[int] | None = None) -> None:
        buyers = self._buyers()
        start = len(self.orders)
        plans = []
        for i in range(start, start + count):
            product = list(PRODUCTS)[i % len(PRODUCTS)]
            roll = self.random.random()
            refund = self.random.random() < self.o.refund_share
            plans.append(
                (buyers[i % len(buyers)], product, 1 + (i % 4 == 0), roll < self.o.receipt_share, refund, roll)
            )
        work: list[Any] = [("order", plan) for plan in plans]
        work += [("withdraw", index) for index in withdraw or []]
        self.random.shuffle(work)
        self._all(self._step, work)

    def _step(self, item: tuple[str, Any]) -> None:
        kind, what = item
        if kind == "withdraw":
            self._withdraw(what)
        else:
            self._order(*what)

    def _order(self, buyer: int, product: str, qty: int, receipt: bool, refund: bool, roll: float) -> None:
        me = self.promoters[buyer]
        body: dict[str, Any] = {"lines": [{"product_id": product, "qty": qty}]}
        created = self.client.call("POST", "/v1/orders", "POST /v1/orders", me.token, body)
        placed = Placed(created["id"], buyer, created["amount_fen"])
        with self._lock:
            self.orders.append(placed)
        oid = placed.id
        self.client.call("POST", f"/v1/orders/{oid}/pay", "POST /v1/orders/{id}/pay", me.token)
        route = "POST /v1/sandbox/orders/{id}/pay-success"
        paid = self.client.call("POST", f"/v1/sandbox/orders/{oid}/pay-success", route, me.token)
        placed.paid = True  # WeChat's twin took the money: its notification must become paid + commission
        if paid.get("status") != "paid":
            with self._lock:
                self.late_paid += 1  # answered before the notification was applied (checked after the run)
            receipt = refund = False  # nobody confirms or refunds an order they do not see paid yet
        if roll < 0.3:
            self.client.call("GET", f"/v1/orders/{oid}", "GET /v1/orders/{id}", me.token)
        if receipt:
            route = "POST /v1/orders/{id}/confirm-receipt"
            self.client.call("POST", f"/v1/orders/{oid}/confirm-receipt", route, me.token)
        if refund:
            amount = placed.amount_fen if roll < 0.5 else placed.amount_fen // 2
            body = {"amount_fen": amount, "reason": "退货"}
            route = "POST /v1/admin/orders/{id}/refunds"
            self.client.call("POST", f"/v1/admin/orders/{oid}/refunds", route, self.finance, body)
            placed.refunded_fen = amount
        upline = self.upline(buyer)
        if upline and roll < 0.6:  # the level-1 promoter looks at the earnings
            self.client.call("GET", "/v1/me/account", "GET /v1/me/account", upline[0].token)
        if upline and roll > 0.8:
            self.client.call("GET", "/v1/me/commissions?limit=20", "GET /v1/me/commissions", upline[0].token)
        if roll > 0.9:
            self.client.call("GET", "/v1/me/team?level=1", "GET /v1/me/team", me.token)

    def _withdraw(self, index: int) -> None:
        me = self.promoters[index]
        account = self.client.call("GET", "/v1/me/account", "GET /v1/me/account", me.token)
        amount = account["available_fen"] // 2
        if amount < WITHDRAW_MIN_FEN:
            return
        headers = {"Idempotency-Key": f"w-{self.run}-{index}"}
        made = self.client.call("POST", "/v1/withdrawals", "POST /v1/withdrawals", me.token, {"amount_fen": amount},
                                headers)  # fmt: skip
        with self._lock:
            self.withdrawals.append((index, made["id"]))

    def withdrawers(self) -> list[int]:
        """The promoters most likely to have earned: heads and level-1 members, up to the option."""
        wanted = self.o.withdrawals if self.o.withdrawals is not None else max(1, self.o.promoters // 10)
        ranked = sorted((p for p in self.promoters if p.token), key=lambda p: (p.depth, p.index))
        return [p.index for p in ranked[:wanted]]

    def confirm_transfers(self) -> None:
        def confirm(item: tuple[int, str]) -> None:
            index, wid = item
            me = self.promoters[index]
            state = self.client.call("GET", f"/v1/withdrawals/{wid}", "GET /v1/withdrawals/{id}", me.token)["state"]
            if state == "wait_user_confirm":
                route = "POST /v1/sandbox/withdrawals/{id}/user-confirm"
                self.client.call("POST", f"/v1/sandbox/withdrawals/{wid}/user-confirm", route, me.token)

        self._all(confirm, self.withdrawals)


# ---------------------------------------------------------------------- checks


def _quiesce(stack: LocalStack, orders: list[Placed], timeout: float = 600.0) -> None:
    """Drain the streams and queues and wait until every refund WeChat's twin owes is finished."""
    from chalicelib.store import get_store

    deadline = time.monotonic() + timeout
    refunded = [o for o in orders if o.refunded_fen]
    while True:
        stack.runner.drain(timeout=timeout)
        with stack.meter.uncounted():
            pending = [
                o.id
                for o in refunded
                if any(r.state.value == "requested" for r in (get_store().orders.get(TENANT, o.id).refunds or []))  # type: ignore[union-attr]
            ]
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def check_books(scenario: Scenario, meter: Meter) -> dict[str, Any]:
    """Money conservation per promoter, and every paid order's commission at each level."""
    from chalicelib.entities import Principal, Role
    from chalicelib.store import get_store
    from tests.integration.test_withdrawals import assert_money_conserved

    store = get_store()
    tenant = SimpleNamespace(tenant=TENANT)
    violations: list[str] = []
    lines: dict[tuple[str, int], Any] = {}
    with meter.uncounted():
        for p in scenario.promoters:
            if not p.id:
                continue
            try:
                assert_money_conserved(tenant, Principal(TENANT, p.id, Role.USER))  # type: ignore[arg-type]
            except AssertionError as exc:
                violations.append(f"{p.id}: {exc}"[:300])
            for line in store.ledger.all_lines(TENANT, p.id):
                if line.event == "paid":
                    lines[(line.order_id, line.level)] = line
    missing: list[str] = []
    wrong: list[str] = []
    paid = [o for o in scenario.orders if o.paid]
    for order in paid:
        for level, promoter in enumerate(scenario.upline(order.buyer), start=1):
            expected = order.amount_fen * RATES_BPS[level - 1] // 10_000
            found = lines.get((order.id, level))
            if found is None:
                missing.append(f"{order.id} level {level}")
            elif found.promoter != promoter.id or found.amount_fen != expected:
                wrong.append(
                    f"{order.id} level {level}: {found.promoter} {found.amount_fen} != {promoter.id} {expected}"
                )
    return {
        "promoters_checked": sum(1 for p in scenario.promoters if p.id),
        "conservation_violations": len(violations),
        "paid_orders": len(paid),
        "commission_lines_expected": sum(len(scenario.upline(o.buyer)) for o in paid),
        "paid_orders_missing_a_commission_line": len({m.split()[0] for m in missing}),
        "commission_lines_wrong": len(wrong),
        "examples": (violations + missing + wrong)[:10],
    }


# ---------------------------------------------------------------------- the run


def _report_routes(recorder: Recorder, raw_p50: float) -> dict[str, Any]:
    routes = {}
    for route in sorted(recorder.latencies):
        stats = percentiles(recorder.latencies[route])
        routes[route] = {
            "count": len(recorder.latencies[route]),
            **{f"{k}_ms": v for k, v in stats.items()},
            "p50_over_raw_getitem_p50": round(stats["p50"] / raw_p50, 1) if raw_p50 else None,
            "statuses": dict(recorder.statuses[route]),
        }
    return routes


def run(options: Options, log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """One load run on its own stack; returns the report (see the module docstring)."""
    meter = Meter()
    real_stdout = sys.stdout
    with open(os.devnull, "w") as sink:
        sys.stdout = meter.count_stdout(sink)  # handlers' logs: counted, not shown
        meter.install()
        try:
            with tempfile.TemporaryDirectory(prefix="fenxiao-load-") as tmp, local_stack(meter, Path(tmp)) as stack:
                previous = _point_logs(sys.stdout)
                try:
                    return _drive(options, stack, log)
                finally:
                    _point_logs(previous)
        finally:
            meter.uninstall()
            sys.stdout = real_stdout


def _point_logs(stream: Any) -> Any:
    """Point the app's Powertools logger at `stream` (it binds sys.stdout when first imported,
    which may be before this run); return the stream it wrote to."""
    import logging

    from chalicelib.observability import logger

    previous = None
    for handler in logging.getLogger(logger.name).handlers:
        if isinstance(handler, logging.StreamHandler):
            previous = handler.setStream(stream)
    return previous or sys.__stdout__


def _drive(options: Options, stack: LocalStack, log: Callable[[str], None]) -> dict[str, Any]:
    from bench import cost

    recorder = Recorder()
    client = Client(stack.api_port, recorder)
    probe = RawProbe(stack.endpoint, f"{stack.prefix}-tenants", {"pk": {"S": TENANT}}, stack.meter)
    with stack.meter.uncounted():
        key = _probe_key(stack)
    probe.key = key
    probe.measure_idle(200)
    timings: dict[str, float] = {}
    second_wave = options.orders - options.orders * 6 // 10

    def drain() -> None:
        stack.runner.drain(timeout=900)

    def payout() -> None:
        drain()
        scenario.job("payout_run")
        drain()

    with ThreadPoolExecutor(options.workers) as pool:
        scenario = Scenario(options, client, pool, log)
        started = time.perf_counter()
        probe.start()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("operators", scenario.operators),
            ("login", scenario.login_all),
            ("teams", scenario.bind_teams),
            ("orders_wave_1", lambda: scenario.order_wave(options.orders * 6 // 10)),
            ("drain", drain),
            ("settle", lambda: scenario.job("settle")),
            ("orders_wave_2", lambda: scenario.order_wave(second_wave, scenario.withdrawers())),
            ("payout", payout),
            ("confirm", scenario.confirm_transfers),
        ]  # fmt: skip
        for name, step in steps:
            begun = time.perf_counter()
            step()
            timings[name] = round(time.perf_counter() - begun, 2)
            log(f"load: {name} done in {timings[name]}s ({sum(len(v) for v in recorder.latencies.values())} requests)")
        elapsed = time.perf_counter() - started
        probe.stop()
    begun = time.perf_counter()
    _quiesce(stack, scenario.orders)
    timings["quiesce"] = round(time.perf_counter() - begun, 2)
    stack.stop_runner.set()
    stack.runner_thread.join(timeout=60)
    usage = [stack.api_snapshot(), stack.meter.snapshot()]
    books = check_books(scenario, stack.meter)
    raw = {"idle": percentiles(probe.idle), "under_load": percentiles(probe.loaded or probe.idle)}
    requests = sum(len(v) for v in recorder.latencies.values())
    paid = books["paid_orders"]
    return {
        "sizes": {
            "promoters": options.promoters,
            "orders": options.orders,
            "workers": options.workers,
            "refunds": sum(1 for o in scenario.orders if o.refunded_fen),
            "withdrawals": len(scenario.withdrawals),
            "paid_answered_before_notification": scenario.late_paid,
        },
        "seconds": round(elapsed, 1),
        "phase_seconds": timings,
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1) if elapsed else None,
        "server_errors": recorder.server_errors(),
        "client_errors": recorder.client_errors(),
        "unexpected_answers": scenario.failures[:10],
        "raw_getitem_ms": raw,
        "routes": _report_routes(recorder, raw["under_load"]["p50"]),
        "books": books,
        "usage": usage,
        "cost": cost.model(cost.Usage.from_snapshots(usage), paid) if paid else None,
        "machine": {"cpus": os.cpu_count(), "note": "driver, chalice local, runner and DynamoDB Local share the CPUs"},
    }


def _probe_key(stack: LocalStack) -> dict[str, Any]:
    """The key of the tenant's item, read the way the app would find it (a real item, so GetItem reads)."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=stack.endpoint, region_name="us-east-1")
    table = f"{stack.prefix}-tenants"
    item = client.scan(TableName=table, Limit=1)["Items"][0]
    schema = client.describe_table(TableName=table)["Table"]["KeySchema"]
    return {k["AttributeName"]: item[k["AttributeName"]] for k in schema}


def summary(result: dict[str, Any]) -> str:
    """A readable digest of the report."""
    lines = [
        f"load: {result['sizes']} in {result['seconds']}s: {result['requests']} requests, "
        f"{result['requests_per_s']} requests/s, server errors {result['server_errors']}",
        f"raw DynamoDB Local GetItem ms: idle {result['raw_getitem_ms']['idle']}, "
        f"under load {result['raw_getitem_ms']['under_load']}",
        f"{'route':48} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'x raw':>7}",
    ]
    for route, r in result["routes"].items():
        lines.append(
            f"{route:48} {r['count']:>6} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} "
            f"{r['p50_over_raw_getitem_p50']!s:>7}"
        )
    lines.append(f"4xx: {result['client_errors'] or 'none'}")
    lines.append(f"books: {result['books']}")
    if result.get("cost"):
        from bench.cost import describe

        lines.append(describe(result["cost"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Load the local stack over HTTP and check the books after it.")
    parser.add_argument("--promoters", type=int, default=Options.promoters)
    parser.add_argument("--orders", type=int, default=Options.orders)
    parser.add_argument("--workers", type=int, default=Options.workers, help="concurrent HTTP clients")
    parser.add_argument("--withdrawals", type=int, default=None, help="promoters who withdraw (default: 1 in 10)")
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args()
    os.chdir(ROOT)
    options = Options(args.promoters, args.orders, args.workers, withdrawals=args.withdrawals)
    result = run(options)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(summary(result))
    print(f"written to {args.out}")
    books = result["books"]
    bad = result["server_errors"] or books["conservation_violations"] or books["paid_orders_missing_a_commission_line"]
    return 1 if bad or books["commission_lines_wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
