"""Which tenant (mini-program) a request is for."""

from __future__ import annotations

import time

from chalicelib import caches
from chalicelib.entities import Tenant
from chalicelib.errors import InvalidInput, Missing
from chalicelib.settings import get_settings
from chalicelib.store import get_store

_CACHE_SECONDS = 60.0
_cache: dict[str, tuple[Tenant, float]] = caches.register(f"{__name__}._cache", {})


def resolve(appid: str | None) -> Tenant:
    """The tenant named by `appid`, or the deployment's only tenant when it is left out."""
    tenant_id = appid or get_settings().default_tenant
    if not tenant_id:
        raise InvalidInput("appid is required", code="appid_required")
    return get(tenant_id)


def get(tenant_id: str) -> Tenant:
    """A known tenant (cached for a minute), or Missing."""
    cached = _cache.get(tenant_id)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    tenant = get_store().tenants.get(tenant_id)
    if tenant is None:
        raise Missing(f"unknown mini-program {tenant_id!r}", code="unknown_tenant")
    _cache[tenant_id] = (tenant, time.monotonic() + _CACHE_SECONDS)
    return tenant
