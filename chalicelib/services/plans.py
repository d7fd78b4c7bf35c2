"""Commission plans: versioned, immutable once stored; one version is active per tenant."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from chalicelib import caches, commission
from chalicelib.api.views import plan_view
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.commission import Campaign, LadderTier, LevelAmount, Plan, ProductOverride
from chalicelib.entities import Principal, Role
from chalicelib.errors import InvalidInput, Missing, StateConflict
from chalicelib.retry import Retry
from chalicelib.store import get_store

# Words a plan must never contain: promoters earn from real sales only (no entry fee, no stock
# purchase, no commission for recruiting itself).
FORBIDDEN_FIELDS = frozenset(
    {"joining_fee", "entry_fee", "membership_fee", "deposit", "stock_purchase", "recruit_bonus"}
)

NEW_VERSIONS = Retry.at_once(3)  # another plan saved at the same moment took the next version number

_cache: dict[tuple[str, int], Plan] = caches.register(f"{__name__}._cache", {})
_lock = threading.Lock()


class LevelAmountBody(BaseModel):
    """One level of a product override: a rate or a fixed amount (the rule checks which)."""

    rate_bps: int | None = None
    fixed_fen: int | None = None


class ProductOverrideBody(BaseModel):
    product_id: str
    levels: list[LevelAmountBody]


class LadderTierBody(BaseModel):
    min_month_sales_fen: int
    level1_rate_bps: int


class CampaignBody(BaseModel):
    name: str
    starts_at: str = Field(json_schema_extra={"format": "date-time"})
    ends_at: str = Field(json_schema_extra={"format": "date-time"})
    multiplier_bps: int
    product_ids: list[str] | None = None


class PlanBody(BaseModel):
    """A commission plan version as operators send it and as it is stored (immutable once saved;
    activate it to use it). The model holds the shape and types; what a plan may pay (one to
    three levels, rates and cap in 0-10000 bps, ladders increasing, campaigns ending after they
    start, the worst case within the cap) is `commission.plan_errors`, in its own words."""

    rates_bps: list[int] = Field(description="per level, 1-3 levels, each 0-10000 bps")
    cap_bps: int = Field(description="all levels together never above this share of the paid amount (0-10000 bps)")
    overrides: list[ProductOverrideBody] = []
    ladder: list[LadderTierBody] = []
    campaigns: list[CampaignBody] = []
    self_purchase: bool = False
    trigger: commission.Trigger = commission.Trigger.PAID
    inactive_upline: commission.InactiveUpline = commission.InactiveUpline.SKIP
    settlement: commission.SettlementMode = commission.SettlementMode.DAYS_AFTER_RECEIPT
    settle_after_days: int = Field(default=7, description="0-365")
    timezone: str = "Asia/Shanghai"


def plan_from_body(body: Any, version: int = 0) -> Plan:
    """A plan from its JSON body (as stored and as operators send it)."""
    forbidden = FORBIDDEN_FIELDS & set(body) if isinstance(body, dict) else set()
    if forbidden:
        raise InvalidInput(
            f"plans cannot charge promoters or pay for recruiting: {', '.join(sorted(forbidden))}", code="forbidden_fee"
        )
    try:
        parsed = PlanBody.model_validate(body)
        campaigns = tuple(
            Campaign(
                c.name,
                datetime.fromisoformat(c.starts_at),
                datetime.fromisoformat(c.ends_at),
                c.multiplier_bps,
                frozenset(c.product_ids or ()),
            )
            for c in parsed.campaigns
        )
    except ValidationError as exc:
        details = [f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput(
            f"the plan is not well formed: {'; '.join(details)}", code="invalid_plan", details=details
        ) from exc
    except ValueError as exc:  # a campaign time that is not ISO 8601
        raise InvalidInput(f"the plan is not well formed: {exc}", code="invalid_plan") from exc
    return Plan(
        version=version,
        rates_bps=tuple(parsed.rates_bps),
        cap_bps=parsed.cap_bps,
        overrides=tuple(
            ProductOverride(o.product_id, tuple(LevelAmount(lv.rate_bps, lv.fixed_fen) for lv in o.levels))
            for o in parsed.overrides
        ),
        ladder=tuple(LadderTier(t.min_month_sales_fen, t.level1_rate_bps) for t in parsed.ladder),
        campaigns=campaigns,
        self_purchase=parsed.self_purchase,
        trigger=parsed.trigger,
        inactive_upline=parsed.inactive_upline,
        settlement=parsed.settlement,
        settle_after_days=parsed.settle_after_days,
        timezone=parsed.timezone,
    )


def validated(body: dict[str, Any]) -> Plan:
    """The plan a body describes, or a 400 listing everything wrong with it (saved or simulated)."""
    plan = plan_from_body(body)
    errors = commission.plan_errors(plan)
    if errors:
        raise InvalidInput("the plan cannot be used: " + "; ".join(errors), code="invalid_plan", details=errors)
    return plan


def create(principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """Validate and store a new plan version (not active until activated)."""
    require_role(principal, Role.OWNER)
    validated(body)
    store = get_store()
    for _ in NEW_VERSIONS:
        stored = store.plans.create(principal.tenant, body, principal.actor, utcnow())
        if stored is not None:
            return plan_view(stored, store.plans.active_version(principal.tenant))
    raise StateConflict("another plan was saved at the same moment, try again", code="busy")


def activate(principal: Principal, version: int) -> dict[str, Any]:
    require_role(principal, Role.OWNER)
    store = get_store()
    if not store.plans.activate(principal.tenant, version, principal.actor, utcnow()):
        raise Missing(f"no plan version {version}", code="unknown_plan")
    return detail(principal, version)


def detail(principal: Principal, version: int) -> dict[str, Any]:
    require_role(principal)
    store = get_store()
    stored = store.plans.get(principal.tenant, version)
    if stored is None:
        raise Missing(f"no plan version {version}", code="unknown_plan")
    return plan_view(stored, store.plans.active_version(principal.tenant))


def listing(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    require_role(principal)
    store = get_store()
    page = store.plans.list(principal.tenant, cursor, limit)
    active = store.plans.active_version(principal.tenant)
    return {"items": [plan_view(p, active) for p in page.items], "next_cursor": page.next_cursor}


def plan(tenant: str, version: int) -> Plan | None:
    """A stored plan version as rules (cached: versions never change)."""
    with _lock:
        cached = _cache.get((tenant, version))
    if cached is not None:
        return cached
    stored = get_store().plans.get(tenant, version)
    if stored is None:
        return None
    rules = plan_from_body(stored.body, stored.version)
    with _lock:
        _cache[(tenant, version)] = rules
    return rules
