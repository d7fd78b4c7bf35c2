"""Operator tooling: create tenants and admin accounts in any stage (local or AWS).

    python -m devtools.admin tenant wx1234567890abcdef --name "My Shop"
    ADMIN_PASSWORD=... python -m devtools.admin admin wx1234567890abcdef alice --role owner
    python -m devtools.admin seed config.json      # {"tenants": [{"appid", "name", "admins": [{"username", "role"}]}]}
    python -m devtools.admin merchant wx1234567890abcdef shop1 --name "Shop One"   # prints the secret once
    python -m devtools.admin merchant wx1234567890abcdef shop1 --rotate            # new secret; old one still valid
    python -m devtools.admin merchant wx1234567890abcdef shop1 --retire-previous   # old one ends

The app's environment (TABLE_PREFIX, and DYNAMODB_ENDPOINT locally or AWS credentials in the
cloud) says where. Passwords come from ADMIN_PASSWORD or a prompt, never from arguments or
files, and are stored as argon2 hashes. Running the same command twice changes nothing
(an existing admin's password changes only with --reset).

A merchant of the order API belongs to one tenant. Its secret comes from MERCHANT_SECRET or is
generated, and is printed once; it is stored sealed with the deployment's MERCHANT_KEY. Merchant
changes are audited on the tenant's trail with the actor `cli:<login name>`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import ADMIN_ROLES, Admin, Role, Tenant


def _password(username: str) -> str:
    password = os.environ.get("ADMIN_PASSWORD") or getpass.getpass(f"password for {username}: ")
    if len(password) < 10:
        raise SystemExit("passwords need at least 10 characters")
    return password


def add_tenant(appid: str, name: str, timezone: str = "Asia/Shanghai") -> bool:
    """Create the tenant if missing; True when created."""
    from chalicelib.store import get_store

    store = get_store()
    if store.tenants.get(appid) is not None:
        return False
    store.tenants.put(Tenant(appid, name, timezone), utcnow())
    return True


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def add_admin(appid: str, username: str, role: Role, *, reset: bool = False) -> bool:
    """Create the admin if missing (or reset its password and role); True when written.

    Audited like the console's operator changes (actor `cli:<login name>`). The CLI is the
    break-glass tool: it does not refuse to demote the last owner.
    """
    from chalicelib import operators as rules
    from chalicelib.store import get_store

    store = get_store()
    if store.tenants.get(appid) is None:
        raise SystemExit(f"unknown tenant {appid}: create it first")
    existing = store.admins.operator(appid, username)
    if existing is not None and not reset:
        return False
    password = _password(username)
    if existing is None:
        if not rules.valid_username(username):
            raise SystemExit("a username is 3 to 32 of a-z, 0-9, '_', '.', '-'")
        admin = Admin(appid, username, hash_password(password), role)
        operator = rules.Operator(appid, username, role, False, utcnow(), 0)
        return store.admins.create(admin, utcnow(), rules.created_event(operator, _actor()))
    change = rules.Change(role=role, password=True)
    return _write(existing, change, password_hash=hash_password(password))


def set_disabled(appid: str, username: str, disabled: bool) -> bool:
    """Disable (or enable) an operator; their tokens stop working on their next request."""
    from chalicelib import operators as rules
    from chalicelib.store import get_store

    existing = get_store().admins.operator(appid, username)
    if existing is None:
        raise SystemExit(f"unknown admin {username} of {appid}")
    if existing.disabled == disabled:
        return False
    return _write(existing, rules.Change(disabled=disabled))


def _write(before: Any, change: Any, *, password_hash: str | None = None) -> bool:
    from chalicelib import operators as rules
    from chalicelib.store import get_store

    events = rules.change_events(before, change, _actor())
    written = get_store().admins.change(
        before, rules.apply(before, change), events, utcnow(), password_hash=password_hash
    )
    if written is not rules.Written.DONE:
        raise SystemExit("the operator changed meanwhile: run the command again")
    return True


def merchant(appid: str, merchant_id: str, *, name: str | None, action: str) -> str:
    """Create or change a merchant credential; returns what to print (a new secret, shown once)."""
    from chalicelib.errors import DomainError
    from chalicelib.services import merchant_credentials as credentials
    from chalicelib.store import get_store

    actor = f"cli:{getpass.getuser()}"
    given = os.environ.get("MERCHANT_SECRET") or None
    try:
        if action == "create":
            existing = get_store().merchants.get(merchant_id)
            if existing is not None and existing.tenant == appid:
                return "exists already (use --rotate for a new secret)"
            secret = credentials.create(appid, merchant_id, name or merchant_id, given, actor)
            return f"created; secret (shown once, give it to the merchant): {secret}"
        if action == "rotate":
            secret = credentials.rotate(appid, merchant_id, given, actor)
            return f"rotated; new secret (shown once; the old one works until --retire-previous): {secret}"
        if action == "retire-previous":
            credentials.retire_previous(appid, merchant_id, actor)
            return "previous secret retired"
        credentials.set_disabled(appid, merchant_id, action == "disable", actor)
        return f"{action}d"
    except DomainError as exc:
        raise SystemExit(f"{exc.code}: {exc.message}") from None


def seed(config: dict[str, Any]) -> list[str]:
    """Tenants and admins from a config file; returns what was created."""
    done = []
    for tenant in config.get("tenants", []):
        if add_tenant(tenant["appid"], tenant["name"], tenant.get("timezone", "Asia/Shanghai")):
            done.append(f"tenant {tenant['appid']}")
        for admin in tenant.get("admins", []):
            if add_admin(tenant["appid"], admin["username"], Role(admin["role"])):
                done.append(f"admin {admin['username']}@{tenant['appid']}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.admin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tenant = sub.add_parser("tenant", help="create a tenant (mini-program)")
    tenant.add_argument("appid")
    tenant.add_argument("--name", required=True)
    tenant.add_argument("--timezone", default="Asia/Shanghai")
    admin = sub.add_parser("admin", help="create an admin account")
    admin.add_argument("appid")
    admin.add_argument("username")
    admin.add_argument("--role", required=True, choices=sorted(r.value for r in ADMIN_ROLES))
    admin.add_argument("--reset", action="store_true", help="replace the password and role of an existing admin")
    for name, doc in (("disable", "disable an admin (their tokens stop at once)"), ("enable", "enable an admin")):
        toggle = sub.add_parser(name, help=doc)
        toggle.add_argument("appid")
        toggle.add_argument("username")
    merchant_cmd = sub.add_parser("merchant", help="create, rotate, retire or disable a merchant of the order API")
    merchant_cmd.add_argument("appid")
    merchant_cmd.add_argument("merchant_id")
    merchant_cmd.add_argument("--name")
    actions = merchant_cmd.add_mutually_exclusive_group()
    for flag in ("rotate", "retire-previous", "disable", "enable"):
        actions.add_argument(f"--{flag}", dest="action", action="store_const", const=flag)
    seeder = sub.add_parser("seed", help="tenants and admins from a JSON file")
    seeder.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "tenant":
        print("created" if add_tenant(args.appid, args.name, args.timezone) else "exists already")
    elif args.command == "admin":
        print(
            "written" if add_admin(args.appid, args.username, Role(args.role), reset=args.reset) else "exists already"
        )
    elif args.command in ("disable", "enable"):
        changed = set_disabled(args.appid, args.username, args.command == "disable")
        print(f"{args.command}d" if changed else "unchanged")
    elif args.command == "merchant":
        print(merchant(args.appid, args.merchant_id, name=args.name, action=args.action or "create"))
    else:
        print("\n".join(seed(json.loads(args.file.read_text())) or ["nothing to do"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
