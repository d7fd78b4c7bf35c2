"""Orders table stream: the commission engine (filled in by the commission service)."""

from __future__ import annotations

from typing import Any


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.services import commissions

    return commissions.process_stream_batch(event.get("Records") or [])
