"""Replay stream records parked after repeated failures (what the `redrive_parked` schedule does).

    python -m devtools.redrive                                  # every tenant, every source
    python -m devtools.redrive --tenant wx1234567890abcdef --source orders
    python -m devtools.redrive --list [--tenant T] [--source S] [--replayed] [--content]

Each item's parked records are replayed in stream order through the processor of the stream
that parked them; one that fails again stays parked (one attempt more) with the item's later
records behind it. Replayed records are kept as history. The app's environment (TABLE_PREFIX,
and DYNAMODB_ENDPOINT locally or AWS credentials in the cloud) says where.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from chalicelib.parking import SOURCES, ParkedState


def list_parked(tenants: list[str], source: str | None, state: ParkedState, content: bool) -> list[dict[str, Any]]:
    """Parked (or replayed) records of these tenants, oldest parking first, optionally with their content."""
    from chalicelib.store import get_store

    store = get_store().parked
    rows: list[dict[str, Any]] = []
    for tenant in tenants:
        cursor = None
        while True:
            page = store.page(tenant, state, source, cursor, 100)
            for parked in page.items:
                row = {"tenant": tenant, **parked.view()}
                if content:
                    records = store.waiting_records(tenant, parked.source, parked.entity)
                    row["record"] = next((r.record for r in records if r.sequence == parked.sequence), None)
                rows.append(row)
            cursor = page.next_cursor
            if cursor is None:
                break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.redrive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", help="only this tenant (appid); default every tenant")
    parser.add_argument("--source", choices=SOURCES, help="only records of this stream")
    parser.add_argument("--list", action="store_true", help="show parked records, replay nothing")
    parser.add_argument("--replayed", action="store_true", help="with --list: show replayed records instead")
    parser.add_argument("--content", action="store_true", help="with --list: include each waiting record's content")
    args = parser.parse_args(argv)

    from chalicelib.clock import utcnow
    from chalicelib.services import parking
    from chalicelib.store import get_store

    if args.list:
        tenants = [args.tenant] if args.tenant else [t.id for t in get_store().tenants.all()]
        state = ParkedState.REPLAYED if args.replayed else ParkedState.PARKED
        for row in list_parked(tenants, args.source, state, args.content):
            print(json.dumps(row, ensure_ascii=False, default=str))
        return 0
    actor = f"cli:{getpass.getuser()}"
    summary = parking.redrive_all(utcnow(), tenant=args.tenant, source=args.source, actor=actor)
    print(json.dumps(summary))
    return 1 if summary["failed_again"] else 0


if __name__ == "__main__":
    sys.exit(main())
