"""Tenants: one item per mini-program (its appid), with its name and timezone."""

from __future__ import annotations

from datetime import datetime

from chalicelib.clock import iso
from chalicelib.entities import Tenant
from chalicelib.store.models import TenantModel


class TenantStore:
    def get(self, tenant: str) -> Tenant | None:
        try:
            item = TenantModel.get(tenant)
        except TenantModel.DoesNotExist:
            return None
        return Tenant(item.tenant, item.name, item.timezone)

    def all(self) -> list[Tenant]:
        """Every tenant (a handful per deployment: a scan is fine here)."""
        return [Tenant(i.tenant, i.name, i.timezone) for i in TenantModel.scan()]

    def put(self, tenant: Tenant, when: datetime) -> None:
        TenantModel(tenant=tenant.id, name=tenant.name, timezone=tenant.timezone, created_at=iso(when)).save()
