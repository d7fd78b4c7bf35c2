"""The demo tenant, seeded idempotently: a tenant, an admin per role and a small team."""

from __future__ import annotations

import os
from typing import Any

from chalicelib.auth import hash_password
from chalicelib.clock import utcnow
from chalicelib.entities import Admin, Role, Tenant
from chalicelib.settings import get_settings

DEMO_TENANT = "wxdemo0000000001"
DEMO_PASSWORD = os.environ.get("DEMO_ADMIN_PASSWORD", "demo-admin-123")
DEMO_ADMINS = {"admin": Role.OWNER, "ops": Role.OPS, "finance": Role.FINANCE, "auditor": Role.AUDITOR}
# alice shares to bob, bob to carol, carol to dave: dave's level 3 is alice.
DEMO_CHAIN = ("alice", "bob", "carol", "dave")
# The demo merchant of the order API (README examples); a real one is created with
# `python -m devtools.admin merchant`, which generates its secret.
DEMO_MERCHANT = ("shop1", os.environ.get("DEMO_MERCHANT_SECRET", "shop1-demo-secret-0123456789"))
DEMO_PRODUCTS = (
    ("lipstick", "丝绒口红 Velvet lipstick", 12_000, 30),
    ("serum", "精华液 Serum 30ml", 26_800, 45),
    ("mooncake", "本地月饼礼盒 Mooncake box", 16_800, None),
)
DEMO_PLAN = {"rates_bps": [1000, 500, 200], "cap_bps": 3000, "settle_after_days": 7}


def seed_demo(tenant_id: str | None = None, merchant: tuple[str, str] = DEMO_MERCHANT) -> dict[str, Any]:
    """Create what is missing of the demo tenant; running it again changes nothing.

    `merchant` (id, secret) is the demo merchant: merchant ids are unique across tenants, so a
    second demo tenant in the same tables (the README test's) needs one of its own."""
    from chalicelib.services import logins, referrals, shares
    from chalicelib.store import get_store

    tenant_id = tenant_id or get_settings().default_tenant or DEMO_TENANT
    store = get_store()
    now = utcnow()
    if store.tenants.get(tenant_id) is None:
        store.tenants.put(Tenant(tenant_id, "演示小程序 Demo Shop"), now)
    for username, role in DEMO_ADMINS.items():
        if store.admins.get(tenant_id, username) is None:
            store.admins.put(Admin(tenant_id, username, hash_password(DEMO_PASSWORD), role), now)
    _seed_catalog_and_plan(tenant_id)
    merchant_id, merchant_secret = merchant
    if get_settings().merchant_key is not None and store.merchants.get(merchant_id) is None:
        from chalicelib.services import merchant_credentials

        merchant_credentials.create(tenant_id, merchant_id, "Demo shop", merchant_secret, "system:seed")
    previous = None
    for name in DEMO_CHAIN:
        result = logins.login(f"dev-{name}", tenant_id)
        principal = _principal(tenant_id, result.user.id)
        if previous is not None and not result.user.upline:
            share = shares.create(previous, None, "seed")
            referrals.scan(principal, share.code)
        previous = principal
    return {
        "tenant": tenant_id,
        "admin_username": "admin",
        "admin_password": DEMO_PASSWORD,
        "admins": {name: role.value for name, role in DEMO_ADMINS.items()},
        "demo_users": list(DEMO_CHAIN),
        "merchant": {"id": merchant_id, "secret": merchant_secret},
    }


def _seed_catalog_and_plan(tenant_id: str) -> None:
    """Demo products and the 10 % / 5 % / 2 % plan, active (only what is missing)."""
    from chalicelib.entities import AuditEvent, Principal, Product
    from chalicelib.services import plans
    from chalicelib.store import get_store

    store = get_store()
    now = utcnow()
    for pid, name, price, repurchase in DEMO_PRODUCTS:
        if store.products.get(tenant_id, pid) is None:
            product = Product(tenant_id, pid, name, price, True, repurchase, now, now)
            event = AuditEvent(
                entity=f"product:{pid}", action="product.created", actor="system:seed", data={"price_fen": price}
            )
            store.products.create(product, event)
    if store.plans.active_version(tenant_id) is None:
        owner = Principal(tenant=tenant_id, subject="admin", role=Role.OWNER)
        plans.activate(owner, plans.create(owner, DEMO_PLAN)["version"])


def _principal(tenant: str, uid: str) -> Any:
    from chalicelib.entities import Principal

    return Principal(tenant=tenant, subject=uid, role=Role.USER)


if __name__ == "__main__":
    print(seed_demo())
