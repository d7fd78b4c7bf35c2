"""What a run would be billed for, counted where it happens: DynamoDB request units, Lambda
invocations and their durations, queue messages and log bytes.

One `Meter` per process. The API process (`bench.serve`, around `chalice local`) and the load
driver's process (the event runner: stream, queue and scheduled handlers) each install one and
write a `snapshot()`; `bench.cost` adds them up and prices them.

- DynamoDB: every call through botocore asks for `ReturnConsumedCapacity=INDEXES` and adds up the
  `CapacityUnits` DynamoDB Local answers (it applies the service's rules: 4 KB per read unit, half
  for eventually consistent reads, 1 KB per write unit, twice for transactions, indexes included).
  Units of read operations are read request units, of write operations write request units.
- Lambda: one invocation per handler call, its duration measured around the handler (what Lambda
  bills, rounded up to 1 ms), grouped by function (`api_handler` for every route, as Chalice deploys).
- Logs: bytes a handler writes to stdout while it runs (Powertools logs and EMF metric blobs;
  Lambda sends stdout to CloudWatch Logs).
- Queues: messages and SendMessageBatch calls of `chalicelib.store.queue` (a local spool here, SQS
  in AWS).

Calls made while `uncounted()` is active in a thread (the driver's own checks and raw probes) are
not counted.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any, TextIO

READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITE_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "ExecuteTransaction"}
)
API_FUNCTION = "api_handler"  # Chalice deploys every route as this one function


def written_items(operation: str, params: dict[str, Any]) -> Counter[str]:
    """Items a write request names, per table (short table name)."""
    names: list[str] = []
    if operation == "TransactWriteItems":
        for item in params.get("TransactItems", []):
            names.extend(str(action.get("TableName", "?")) for kind, action in item.items() if kind != "ConditionCheck")
    elif operation == "BatchWriteItem":
        for table, requests in params.get("RequestItems", {}).items():
            names.extend([table] * len(requests))
    elif operation in WRITE_OPERATIONS:
        names.append(str(params.get("TableName", "?")))
    return Counter(name.split("-")[-1] for name in names)


def units_per_table(consumed: Any) -> defaultdict[str, float]:
    """`ConsumedCapacity` (INDEXES) as units per table and per "table/index"."""
    entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
    per_table: defaultdict[str, float] = defaultdict(float)
    for entry in entries:
        table = str(entry.get("TableName", "?")).split("-")[-1]
        per_table[table] += float((entry.get("Table") or {}).get("CapacityUnits") or entry.get("CapacityUnits") or 0)
        for index, used in (entry.get("GlobalSecondaryIndexes") or {}).items():
            per_table[f"{table}/{index}"] += float(used.get("CapacityUnits") or 0)
    return per_table


class _CountingStream(io.TextIOBase):
    """Passes writes through and counts the bytes written by threads inside a handler."""

    def __init__(self, meter: Meter, target: TextIO) -> None:
        self._meter = meter
        self._target = target

    def write(self, text: str) -> int:
        if getattr(self._meter._local, "handler", None):
            self._meter.add_log_bytes(len(text.encode("utf-8")))
        return self._target.write(text)

    def flush(self) -> None:
        self._target.flush()

    def writable(self) -> bool:
        return True


class Meter:
    """Counters of one process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.ddb_requests: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.units_by_table: defaultdict[str, float] = defaultdict(float)  # "read|write table[/index]" -> units
        self.write_units_by_route: defaultdict[str, float] = defaultdict(float)  # route or function -> units
        self.write_items: Counter[str] = Counter()  # "tx table" or "single table" -> items written
        self.durations_ms: dict[str, list[float]] = defaultdict(list)  # function -> invocation durations
        self.routes: Counter[str] = Counter()  # API invocations per route
        self.route_ms: Counter[str] = Counter()  # billed milliseconds per route
        self.log_bytes = 0
        self.queue_messages: Counter[str] = Counter()
        self.queue_batches: Counter[str] = Counter()
        self._undo: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ installing

    def install(self) -> Meter:
        """Wrap botocore's API calls and the queue sender; undone by `uninstall()`."""
        import botocore.client
        import botocore.exceptions

        from chalicelib.store import queue

        original_call = botocore.client.BaseClient._make_api_call
        original_spool = queue.spool
        meter = self

        def counting_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if client.meta.service_model.service_name != "dynamodb" or meter.skipping:
                return original_call(client, operation, params)
            if operation in READ_OPERATIONS | WRITE_OPERATIONS:  # PynamoDB asks for TOTAL: ask for more
                params = {**params, "ReturnConsumedCapacity": "INDEXES"}
            items = written_items(operation, params)
            try:
                response = original_call(client, operation, params)
            except botocore.exceptions.ClientError:
                # A refused conditional write or a cancelled transaction is billed too (AWS
                # charges the write units it would have used); counted at the floor.
                if items:
                    meter.add_dynamodb(operation, None, items)
                raise
            meter.add_dynamodb(operation, response.get("ConsumedCapacity"), items)
            return response

        def counting_spool(directory: Any, name: str, bodies: list[dict[str, Any]]) -> Any:
            if not meter.skipping:
                meter.add_queue(name, len(bodies))
            return original_spool(directory, name, bodies)

        botocore.client.BaseClient._make_api_call = counting_call
        queue.spool = counting_spool  # type: ignore[assignment]
        self._undo.append(lambda: setattr(botocore.client.BaseClient, "_make_api_call", original_call))
        self._undo.append(lambda: setattr(queue, "spool", original_spool))
        return self

    def count_stdout(self, target: TextIO) -> TextIO:
        """A stream to put in place of `sys.stdout` (before the app is imported, so the loggers bind
        to it) that counts what handlers write and passes everything on to `target`."""
        return _CountingStream(self, target)  # type: ignore[return-value]

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    # ------------------------------------------------------------------ counting

    @property
    def skipping(self) -> bool:
        return bool(getattr(self._local, "skip", False))

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Nothing this thread does inside the block is counted."""
        self._local.skip = True
        try:
            yield
        finally:
            self._local.skip = False

    @contextlib.contextmanager
    def invocation(self, function: str, route: str | None = None) -> Iterator[None]:
        """Count one Lambda invocation of `function` (and its route) and time it."""
        self._local.handler = function
        self._local.route = route or function
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self._local.handler = None
            self._local.route = None
            with self._lock:
                self.durations_ms[function].append(elapsed)
                if route:
                    self.routes[route] += 1
                    self.route_ms[route] += math.ceil(elapsed)

    def add_dynamodb(self, operation: str, consumed: Any, items: Counter[str] | None = None) -> None:
        """Add the units DynamoDB Local reported for one call. Local undercounts transactions
        (three updates of one table come back as 2 units where DynamoDB bills 2 per item and KB),
        so a transaction's table units are at least 2 per item it writes there, and a single write
        at least 1: the floor DynamoDB bills for items under 1 KB."""
        kind = "read" if operation in READ_OPERATIONS else "write" if operation in WRITE_OPERATIONS else None
        floor = 2 if operation == "TransactWriteItems" else 1
        route = getattr(self._local, "route", None) or "(outside a handler)"
        per_table = units_per_table(consumed)
        if kind == "write":
            for table, count in (items or {}).items():
                per_table[table] = max(per_table[table], float(floor * count))
        units = sum(per_table.values())
        with self._lock:
            if kind:
                for table, used in per_table.items():
                    self.units_by_table[f"{kind} {table}"] += used
                if kind == "write":
                    self.write_units_by_route[route] += units
                    for table, count in (items or {}).items():
                        self.write_items[f"{'tx' if floor == 2 else 'single'} {table}"] += count
            self.ddb_requests[operation] += 1
            if kind == "read":
                self.read_units += units
            elif kind == "write":
                self.write_units += units

    def add_log_bytes(self, size: int) -> None:
        with self._lock:
            self.log_bytes += size

    def add_queue(self, name: str, messages: int) -> None:
        with self._lock:
            self.queue_messages[name] += messages
            self.queue_batches[name] += 1

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON (see `bench.cost.Usage.from_snapshots`)."""
        with self._lock:
            return {
                "dynamodb_requests": dict(self.ddb_requests),
                "read_request_units": self.read_units,
                "write_request_units": self.write_units,
                "units_by_table": dict(self.units_by_table),
                "write_units_by_route": dict(self.write_units_by_route),
                "write_items": dict(self.write_items),
                "invocations": {name: len(values) for name, values in self.durations_ms.items()},
                "billed_ms": {name: sum(math.ceil(v) for v in values) for name, values in self.durations_ms.items()},
                "routes": dict(self.routes),
                "route_billed_ms": dict(self.route_ms),
                "log_bytes": self.log_bytes,
                "queue_messages": dict(self.queue_messages),
                "queue_batches": dict(self.queue_batches),
            }
