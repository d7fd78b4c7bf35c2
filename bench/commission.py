"""The commission pipeline against raw DynamoDB Local transactions of the same items, one run.

- pipeline: orders placed beforehand are moved to paid as the payment notification does (one
  conditional update each), then the orders stream is delivered to the app's handler by the
  local event runner (audit records, ledger lines, account and counter updates), timed from
  the first order write to the last ledger write;
- raw: one TransactWriteItems per order writing the same items (the paid order, three ledger
  lines, three account updates, the sales counter) into twin tables nobody consumes;
- writes per paid order: DynamoDB write requests and items (transactional items count twice
  in write units) seen by botocore while the pipeline runs;
- hot promoter: orders whose level 1 is the same promoter; account item writes counted.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

TARGET = 0.5


def run(orders: int, hot_orders: int) -> dict[str, Any]:
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
        return _measure(endpoint, settings.table_prefix, orders, hot_orders)
    finally:
        stop(proc)


class _Calls:
    """Counts DynamoDB write requests and written items made through botocore."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.items = 0
        self.write_units = 0
        self.account_writes = 0
        self.hot_key = ""
        self._original: Any = None

    def __enter__(self) -> _Calls:
        import botocore.client

        self._original = botocore.client.BaseClient._make_api_call
        calls = self

        def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
            calls.record(operation, params)
            return calls._original(client, operation, params)

        botocore.client.BaseClient._make_api_call = counting
        return self

    def __exit__(self, *exc: object) -> None:
        import botocore.client

        botocore.client.BaseClient._make_api_call = self._original

    def record(self, operation: str, params: dict[str, Any]) -> None:
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
    from chalicelib.services import accounts, referrals, shares

    ids = [accounts.login(f"dev-bench-{uuid.uuid4().hex[:8]}", tenant).user.id for _ in range(count)]
    for parent, child in itertools.pairwise(ids):
        code = shares.create(Principal(tenant, parent, Role.USER), None, None).code
        referrals.scan(Principal(tenant, child, Role.USER), code)
    return ids


def _measure(endpoint: str, prefix: str, orders: int, hot_orders: int) -> dict[str, Any]:
    import boto3

    from bench.binding import _runner, _twin
    from chalicelib.clock import utcnow
    from chalicelib.entities import AuditEvent, Principal, Product, Role
    from chalicelib.services import orders as order_service
    from chalicelib.services import plans
    from chalicelib.store import get_store
    from chalicelib.wechat import get_pay

    tenant = "wxbench000000001"
    os.environ["SANDBOX_KEYS_DIR"] = tempfile.mkdtemp()
    owner = Principal(tenant, "bench", Role.OWNER)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1000, 500, 200], "cap_bps": 3000})["version"])
    now = utcnow()
    event = AuditEvent(entity="product:tea", action="product.created", actor="system:bench", data={})
    get_store().products.create(Product(tenant, "tea", "tea", 9_900, True, None, now, now), event)
    runner = _runner(endpoint, prefix)

    def buyers_under(chain: list[str], count: int) -> list[str]:
        from chalicelib.services import accounts, referrals, shares

        code = shares.create(Principal(tenant, chain[-1], Role.USER), None, None).code
        found = []
        for _ in range(count):
            uid = accounts.login(f"dev-buyer-{uuid.uuid4().hex[:8]}", tenant).user.id
            referrals.scan(Principal(tenant, uid, Role.USER), code)
            found.append(uid)
        return found

    chains = [_people(tenant, 3) for _ in range(10)]
    buyers = [b for chain in chains for b in buyers_under(chain, max(1, orders // 10 // 5))]
    runner.drain(timeout=600)
    pay = get_pay(tenant)

    def mark_paid(order_id: str) -> None:
        """What the payment notification writes: the order moved to paid (one conditional update)."""
        from chalicelib.clock import iso
        from chalicelib.orders import OrderStatus

        at = utcnow()
        data = {"transaction_id": f"tx{order_id}", "amount_fen": 9_900}
        paid_event = AuditEvent(entity=f"order:{order_id}", action="order.paid", actor="system:wechatpay", data=data)
        extra = {"paid_at": iso(at), "transaction_id": f"tx{order_id}"}
        get_store().orders.transition(
            tenant, order_id, (OrderStatus.CREATED,), OrderStatus.PAID, when=at, event=paid_event, extra=extra
        )

    # pipeline: orders placed beforehand (not timed), then paid: order written -> stream -> ledger
    waiting = [
        order_service.place(Principal(tenant, buyers[i % len(buyers)], Role.USER), [("tea", 1)], None, None).id
        for i in range(orders)
    ]
    runner.drain(timeout=900)
    with _Calls() as calls:
        start = time.perf_counter()
        for order_id in waiting:
            mark_paid(order_id)
        written_s = time.perf_counter() - start
        runner.drain(timeout=900)
        pipeline_s = time.perf_counter() - start

    # raw: the same items, one transaction per order
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    raw_orders, raw_ledger, raw_accounts, raw_stats = (
        _twin(client, f"{prefix}-{t}") for t in ("orders", "ledger", "accounts", "stats")
    )
    run_id = uuid.uuid4().hex[:6]

    def raw_order(i: int) -> None:
        chain = chains[i % len(chains)]
        order_id = f"raw{run_id}{i}"
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": raw_orders, "Item": {"pk": {"S": f"{tenant}#{order_id}"}, "status": {"S": "paid"},
             "amount_fen": {"N": "9900"}, "lines": {"S": "[]"}, "attribution": {"S": "{}"}},
             "ConditionExpression": "attribute_not_exists(pk)"}},
        ]  # fmt: skip
        for level, promoter in enumerate(reversed(chain), 1):
            items.append({"Put": {"TableName": raw_ledger, "Item": {"pk": {"S": f"{tenant}#{promoter}"},
                          "sk": {"S": f"{order_id}#{level}#paid"}, "order_key": {"S": f"{tenant}#{order_id}"},
                          "amount_fen": {"N": "990"}, "state": {"S": "pending"}, "trace": {"S": "{}"}},
                          "ConditionExpression": "attribute_not_exists(sk)"}})  # fmt: skip
            items.append({"Update": {"TableName": raw_accounts, "Key": {"pk": {"S": f"{tenant}#{promoter}"}},
                          "UpdateExpression": "ADD pending_fen :a",
                          "ExpressionAttributeValues": {":a": {"N": "990"}}}})  # fmt: skip
        items.append({"Update": {"TableName": raw_stats, "Key": {"pk": {"S": f"{tenant}#l1sales#{chain[-1]}"},
                      "period": {"S": "2026-11"}}, "UpdateExpression": "ADD sales_fen :a",
                      "ExpressionAttributeValues": {":a": {"N": "9900"}}}})  # fmt: skip
        client.transact_write_items(TransactItems=items)

    start = time.perf_counter()
    for i in range(orders):
        raw_order(i)
    raw_s = time.perf_counter() - start

    # hot promoter: every order's level 1 is the same promoter; orders are placed first and
    # paid later (as buyers do), so the measured batches hold payments only
    hot_chain = _people(tenant, 3)
    hot_buyers = buyers_under(hot_chain, 20)
    placed = [
        order_service.place(Principal(tenant, hot_buyers[i % 20], Role.USER), [("tea", 1)], None, None)
        for i in range(hot_orders)
    ]
    runner.drain(timeout=900)
    for order in placed:
        user = get_store().users.get(tenant, order.buyer)
        openid = user.openid if user else ""
        headers, body = pay.notification_for(order.id, order.amount_fen, openid)  # type: ignore[attr-defined]
        order_service.payment_notification(tenant, headers, body)
    with _Calls() as hot:
        hot.hot_key = f"{tenant}#{hot_chain[-1]}"
        runner.drain(timeout=900)
    batch_size = 30
    account = get_store().ledger.account(tenant, hot_chain[-1])

    ratio = (orders / pipeline_s) / (orders / raw_s)
    per_order = {op: round(n / orders, 2) for op, n in sorted(calls.requests.items())}
    return {
        "orders": orders,
        "pipeline_orders_per_s": round(orders / pipeline_s, 1),
        "of_which_order_writes_s": round(written_s, 2),
        "of_which_stream_s": round(pipeline_s - written_s, 2),
        "raw_transactions_per_s": round(orders / raw_s, 1),
        "ratio_pipeline_to_raw": round(ratio, 3),
        "target": f">= {TARGET}",
        "meets_target": ratio >= TARGET,
        "write_requests_per_paid_order": per_order,
        "items_written_per_paid_order": round(calls.items / orders, 2),
        "write_units_per_paid_order_est": round(calls.write_units / orders, 2),
        "hot_promoter_orders": hot_orders,
        "hot_promoter_account_item_writes": hot.account_writes,
        "hot_promoter_bound": f"<= {hot_orders}/{batch_size} + 1 = {hot_orders // batch_size + 1}",
        "hot_promoter_meets_bound": hot.account_writes <= hot_orders // batch_size + 1,
        "hot_promoter_pending_fen": account["pending_fen"],
        "hot_promoter_expected_fen": hot_orders * 990,
    }
