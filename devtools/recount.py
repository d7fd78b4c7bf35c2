"""Rebuild the report counters from what they count, and show (or repair) what differs.

    python -m devtools.recount --local                      # every tenant of `make run`'s stack
    python -m devtools.recount --tenant wx1234567890abcdef  # one tenant: exit 1 if anything differs
    python -m devtools.recount --tenant wx1234567890abcdef --fix --actor ops:alice

Without `--fix` nothing is written. With it, each difference is added to its counter, audited as
`stats.recounted` with the actor. The rules are `chalicelib.services.recount`'s; the day's `scans`
are not rebuilt (see there). In AWS the app's environment says where (TABLE_PREFIX, and
credentials allowed to Scan the users, orders, shares, ledger, withdrawals and stats tables and to
write the stats and audit tables). Prints one JSON line per tenant.
"""

from __future__ import annotations

import argparse
import json
import sys

from devtools import tenant_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.recount", description=__doc__.split("\n\n")[0])
    tenant_cli.add_options(parser)
    parser.add_argument("--fix", action="store_true", help="add each difference to its counter (audited)")
    parser.add_argument("--actor", default="system:recount", help="who the audit records name (with --fix)")
    args = parser.parse_args(argv)
    tenants = tenant_cli.tenants(args)

    from chalicelib.services import recount

    differ = False
    for tenant in tenants:
        found = recount.repair(tenant, args.actor) if args.fix else recount.drift(tenant)
        differ = differ or bool(found.differences)
        print(json.dumps({**found.view(), "fixed": args.fix}, ensure_ascii=False))
    return 1 if differ and not args.fix else 0


if __name__ == "__main__":
    sys.exit(main())
