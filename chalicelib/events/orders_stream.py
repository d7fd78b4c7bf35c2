"""Orders table stream: the commission engine, under the parking rules (chalicelib/parking.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.events import parking
from chalicelib.services import commissions

SOURCE = "orders"


def process_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The commission engine over some order records (a stream batch, or a parked record replayed)."""
    return commissions.process_stream_batch(records)


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return parking.process(SOURCE, event.get("Records") or [], process_records)
