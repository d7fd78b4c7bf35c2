"""Admin accounts and tenants."""

from __future__ import annotations

from datetime import datetime

from chalicelib.clock import iso
from chalicelib.entities import Admin, Role, Tenant
from chalicelib.store.models import AdminModel, TenantModel


class AdminStore:
    def get(self, tenant: str, username: str) -> Admin | None:
        try:
            item = AdminModel.get(f"{tenant}#{username}", consistent_read=True)
        except AdminModel.DoesNotExist:
            return None
        return Admin(
            item.tenant,
            item.username,
            item.password_hash,
            Role(item.role),
            bool(item.disabled),
            int(item.token_version or 0),
        )

    def put(self, admin: Admin, when: datetime) -> None:
        """Create or replace an admin account (seeding and operator tooling)."""
        AdminModel(
            pk=f"{admin.tenant}#{admin.username}",
            tenant=admin.tenant,
            username=admin.username,
            password_hash=admin.password_hash,
            role=admin.role.value,
            created_at=iso(when),
            disabled=admin.disabled,
            token_version=admin.token_version,
        ).save()


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
