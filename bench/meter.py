"""What a run would be billed for, counted where it happens: DynamoDB request units, Lambda
invocations and their durations, queue messages and log bytes.

One `Meter` per process. The API process (`bench.serve`, around `chalice local`) and the load
driver's process (the event runner: stream, queue and scheduled handlers) each install one and
write a `snapshot()`; `bench.cost` adds them up and prices them.

- DynamoDB: every call through botocore asks for `ReturnConsumedCapacity=TOTAL` and adds up the
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

        from chalicelib.store import queue

        original_call = botocore.client.BaseClient._make_api_call
        original_spool = queue.spool
        meter = self

        def counting_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if client.meta.service_model.service_name != "dynamodb" or meter.skipping:
                return original_call(client, operation, params)
            if operation in READ_OPERATIONS | WRITE_OPERATIONS and "ReturnConsumedCapacity" not in params:
                params = {**params, "ReturnConsumedCapacity": "TOTAL"}
            response = original_call(client, operation, params)
            meter.add_dynamodb(operation, response.get("ConsumedCapacity"))
            return response

        def counting_spool(directory: Any, name: str, bodies: list[dict[str, Any]]) -> Any:
            if not meter.skipping:
                meter.add_queue(name, len(bodies))
            return original_spool(directory, name, bodies)

        botocore.client.BaseClient._make_api_call = counting_call  # type: ignore[method-assign]
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
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self._local.handler = None
            with self._lock:
                self.durations_ms[function].append(elapsed)
                if route:
                    self.routes[route] += 1
                    self.route_ms[route] += math.ceil(elapsed)

    def add_dynamodb(self, operation: str, consumed: Any) -> None:
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        units = sum(float(entry.get("CapacityUnits") or 0) for entry in entries)
        with self._lock:
            self.ddb_requests[operation] += 1
            if operation in READ_OPERATIONS:
                self.read_units += units
            elif operation in WRITE_OPERATIONS:
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
                "invocations": {name: len(values) for name, values in self.durations_ms.items()},
                "billed_ms": {name: sum(math.ceil(v) for v in values) for name, values in self.durations_ms.items()},
                "routes": dict(self.routes),
                "route_billed_ms": dict(self.route_ms),
                "log_bytes": self.log_bytes,
                "queue_messages": dict(self.queue_messages),
                "queue_batches": dict(self.queue_batches),
            }
