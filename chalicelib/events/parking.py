"""The parking wrapper every stream handler runs its processor through (rules: chalicelib/parking.py).

    process("orders", records, commissions.process_stream_batch)

1. records of an item that has a parked record are parked behind it, unprocessed;
2. the rest go to the processor, which returns Lambda's `{"batchItemFailures": [...]}`;
3. each failed item's first failed record has its failed delivery counted; at `PARK_AFTER`
   it is parked with its full content, with its item's later records, and is no longer
   reported, so the shard moves on. Other failures are reported for Lambda to redeliver.

Processors do not say why a record failed (commissions only logs it), so the errors logged
while the processor runs are captured and attributed to the records they name (a failure
may also carry its own `reason`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import chalicelib.store
from chalicelib.clock import utcnow
from chalicelib.observability import SERVICE, count, logger
from chalicelib.parking import ParkedRecord, Reason, StreamRef, causes, decide, ref_of, split_blocked

Records = Sequence[Mapping[str, Any]]
Processor = Callable[[Records], Mapping[str, Any]]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class ErrorCapture(logging.Handler):
    """Collects the errors the app logs while a processor runs: (text, values named in extras)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[tuple[str, set[str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{text}: {type(exc).__name__}: {exc}"
        extras = {str(v) for k, v in vars(record).items() if k not in _STANDARD and isinstance(v, str | int)}
        self.errors.append((text, extras))

    def error_for(self, ref: StreamRef) -> str | None:
        """The errors logged about this record (naming its sequence or its item's id), else all."""

        def names(value: str) -> bool:
            return value in (ref.sequence, ref.entity) or ref.entity.endswith(f"#{value}")

        about = [text for text, extras in self.errors if any(names(v) for v in extras)]
        texts = about or [text for text, _ in self.errors]
        return "; ".join(dict.fromkeys(texts)) or None


@contextmanager
def capture_errors() -> Iterator[ErrorCapture]:
    handler = ErrorCapture()
    app_logger = logging.getLogger(SERVICE)  # the Powertools logger's own logger
    app_logger.addHandler(handler)
    try:
        yield handler
    finally:
        app_logger.removeHandler(handler)


def run_processor(processor: Processor, records: Records) -> tuple[list[str], dict[str, str], ErrorCapture]:
    """Run a processor: (failed sequence numbers, reasons it gave, the errors it logged).

    A processor that raises fails every record it was given (counted like any failure), so
    a crash cannot skip the parking rules.
    """
    with capture_errors() as captured:
        try:
            response = processor(records)
        except Exception as exc:
            logger.exception("stream processor raised", extra={"records": len(records)})
            sequences = [ref_of(record).sequence for record in records]
            return sequences, dict.fromkeys(sequences, f"{type(exc).__name__}: {exc}"), captured
    failures = list(response.get("batchItemFailures") or [])
    failed = [str(f.get("itemIdentifier", "")) for f in failures]
    reasons = {str(f.get("itemIdentifier", "")): str(f["reason"]) for f in failures if f.get("reason")}
    return failed, reasons, captured


def process(source: str, records: Records, processor: Processor, now: datetime | None = None) -> dict[str, Any]:
    """Run one stream batch through `processor` under the parking rules; Lambda's partial response."""
    store = chalicelib.store.get_store().parked  # looked up when called: tests swap the factory
    now = now or utcnow()
    refs = [ref_of(record) for record in records]
    content = {ref.sequence: record for ref, record in zip(refs, records, strict=True)}
    run, behind = split_blocked(refs, store.blocked(source, {ref.item for ref in refs}))
    parked = sum(
        store.park(source, ref, content[ref.sequence], reason=Reason.BEHIND, attempts=0, errors=None, now=now)
        for ref in behind
    )
    failed, reasons, captured = (
        run_processor(processor, [content[ref.sequence] for ref in run]) if run else ([], {}, None)
    )
    attempts: dict[str, int] = {}
    errors: dict[str, tuple[str, str]] = {}
    for ref in causes(run, failed):
        error = reasons.get(ref.sequence) or (captured.error_for(ref) if captured else None)
        error = error or f"reported failed by the {source} processor"
        attempts[ref.sequence], first_error = store.count_failure(source, ref, error, now)
        errors[ref.sequence] = (first_error, error)
    decision = decide(run, failed, attempts)
    for ref, reason in decision.park:
        failed_here = reason is Reason.FAILED
        parked += store.park(
            source,
            ref,
            content[ref.sequence],
            reason=reason,
            attempts=attempts.get(ref.sequence, 0) if failed_here else 0,
            errors=errors.get(ref.sequence) if failed_here else None,
            now=now,
        )
    if parked:
        count("EventsParked", parked)
        logger.warning("stream records parked", extra={"source": source, "parked": parked})
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in decision.report]}


def processor_for(source: str) -> Processor:
    """The processor of a source's stream handler (what a redrive replays parked records through)."""
    if source == "orders":
        # function-local: cold start (the redrive schedule loads a processor only to replay a record)
        from chalicelib.events import orders_stream

        return orders_stream.process_records
    if source == "users":
        # function-local: cold start (Powertools batch loads only when a users record is replayed)
        from chalicelib.events import users_stream

        return users_stream.process_records
    raise ValueError(f"no stream processor for source {source!r}")


def replay(parked: ParkedRecord) -> str | None:
    """Deliver a parked record to its source's processor again: None when it was applied, else why not."""
    if parked.record is None:
        raise ValueError("a parked record is replayed with its content")
    ref = StreamRef(parked.tenant, parked.entity, parked.sequence)
    failed, reasons, captured = run_processor(processor_for(parked.source), [parked.record])
    if ref.sequence not in failed:
        return None
    return reasons.get(ref.sequence) or captured.error_for(ref) or f"reported failed by the {parked.source} processor"
