"""What the operators' per-tenant tools share (`devtools.audit`, `backfill`, `recount`): the
`--tenant` and `--local` options, and the tenants a run covers.

`--local` points the app's settings at `make run`'s stack (it must be running); without it the
environment says where (TABLE_PREFIX, and DYNAMODB_ENDPOINT locally or AWS credentials in the
cloud). Without `--tenant` a run covers every tenant.
"""

from __future__ import annotations

import argparse
import os


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="one tenant (default: every tenant)")
    parser.add_argument("--local", action="store_true", help="the tables of `make run`'s stack (it must be running)")


def tenants(args: argparse.Namespace) -> list[str]:
    """Point the settings where `args` say, build the store (it configures the models' tables and
    endpoint), and return the tenants to cover."""
    if args.local:
        from devtools.stack import load_config, stack_env

        os.environ.update(stack_env(load_config()))

    from chalicelib.store import get_store

    store = get_store()
    return [args.tenant] if args.tenant else [t.id for t in store.tenants.all()]
