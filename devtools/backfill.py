"""Give data written before an index existed its keys in it (orders: `listed`, `sold`).

    python -m devtools.backfill --local                  # every tenant of `make run`'s stack
    python -m devtools.backfill --tenant wx1234567890abcdef [--dry-run]

In AWS the app's environment says where (TABLE_PREFIX and credentials allowed to Scan and
UpdateItem the orders table). Prints one JSON line per tenant: orders scanned and keys set.
Running it again sets nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from devtools import tenant_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.backfill", description=__doc__.split("\n\n")[0])
    tenant_cli.add_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="count what is missing, write nothing")
    args = parser.parse_args(argv)
    tenants = tenant_cli.tenants(args)

    from chalicelib.store import backfill

    for tenant in tenants:
        filled = backfill.order_index_keys(tenant, dry_run=args.dry_run)
        print(json.dumps({"tenant": tenant, "dry_run": args.dry_run, **asdict(filled)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
