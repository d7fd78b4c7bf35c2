"""The store: the only package that talks to DynamoDB (through PynamoDB).

PynamoDB and botocore are imported on first use (`get_store()`), not when the app is
imported, which keeps Lambda cold starts small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib.caches import cached
from chalicelib.settings import Settings, get_settings

if TYPE_CHECKING:
    from chalicelib.store.admins import AdminStore
    from chalicelib.store.audit import AuditStore
    from chalicelib.store.catalog import CouponStore, ProductStore
    from chalicelib.store.exports import ExportStore
    from chalicelib.store.ledger import LedgerStore
    from chalicelib.store.merchants import MerchantStore
    from chalicelib.store.nonces import NonceStore
    from chalicelib.store.orders import OrderStore
    from chalicelib.store.parked import ParkedStore
    from chalicelib.store.plans import PlanStore
    from chalicelib.store.shares import ShareStore
    from chalicelib.store.tenants import TenantStore
    from chalicelib.store.users import UserStore
    from chalicelib.store.withdrawals import WithdrawalStore


@dataclass(frozen=True)
class Store:
    users: UserStore
    shares: ShareStore
    admins: AdminStore
    tenants: TenantStore
    audit: AuditStore
    plans: PlanStore
    orders: OrderStore
    ledger: LedgerStore
    products: ProductStore
    coupons: CouponStore
    nonces: NonceStore
    withdrawals: WithdrawalStore
    parked: ParkedStore
    merchants: MerchantStore
    exports: ExportStore


def build_store(settings: Settings) -> Store:
    """A store bound to these settings' tables."""
    # function-local: cold start (PynamoDB and botocore load with the first get_store())
    from chalicelib.store.admins import AdminStore
    from chalicelib.store.audit import AuditStore
    from chalicelib.store.base import Transactions
    from chalicelib.store.catalog import CouponStore, ProductStore
    from chalicelib.store.exports import ExportStore
    from chalicelib.store.ledger import LedgerStore
    from chalicelib.store.merchants import MerchantStore
    from chalicelib.store.models import configure
    from chalicelib.store.nonces import NonceStore
    from chalicelib.store.orders import OrderStore
    from chalicelib.store.parked import ParkedStore
    from chalicelib.store.plans import PlanStore
    from chalicelib.store.shares import ShareStore
    from chalicelib.store.tenants import TenantStore
    from chalicelib.store.users import UserStore
    from chalicelib.store.withdrawals import WithdrawalStore

    configure(settings)
    tx = Transactions(settings)
    return Store(
        users=UserStore(),
        shares=ShareStore(tx),
        admins=AdminStore(tx),
        tenants=TenantStore(),
        audit=AuditStore(tx),
        plans=PlanStore(tx),
        orders=OrderStore(tx),
        ledger=LedgerStore(tx),
        products=ProductStore(tx),
        coupons=CouponStore(tx),
        nonces=NonceStore(tx),
        withdrawals=WithdrawalStore(tx),
        parked=ParkedStore(tx),
        merchants=MerchantStore(tx),
        exports=ExportStore(tx),
    )


@cached(maxsize=1)
def get_store() -> Store:
    """The process-wide store (built on first use, never at import)."""
    return build_store(get_settings())
