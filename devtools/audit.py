"""Verify the audit trail from the command line (what `POST /v1/admin/audit/verify` does).

    python -m devtools.audit verify                                  # every tenant, the last 7 days
    python -m devtools.audit verify --tenant wx1234567890abcdef --from 2026-11-01 --to 2026-11-30

The app's environment says where (TABLE_PREFIX, and DYNAMODB_ENDPOINT locally or AWS credentials
in the cloud); `make audit-verify` runs it against `make run`'s stack. Prints one JSON line per
tenant and exits 1 when any record fails, 0 when all verify.
"""

from __future__ import annotations

import argparse
import json
import sys

from devtools import tenant_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.audit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="recompute hashes, chains and seals")
    verify.add_argument("--from", dest="first", help="first day, YYYY-MM-DD in the tenant's timezone")
    verify.add_argument("--to", dest="last", help="last day (default: today)")
    tenant_cli.add_options(verify)
    args = parser.parse_args(argv)
    tenants = tenant_cli.tenants(args)

    from chalicelib.errors import DomainError
    from chalicelib.services import audit_trail

    failed = False
    for tenant in tenants:
        try:
            result = audit_trail.verify_tenant(tenant, args.first, args.last)
        except DomainError as exc:
            raise SystemExit(f"{tenant}: {exc.code}: {exc.message}") from None
        failed |= not result["ok"]
        print(json.dumps({"tenant": tenant, **result}, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
