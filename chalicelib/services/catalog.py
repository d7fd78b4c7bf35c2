"""Catalog: products and coupons.

Owners and ops keep the products and coupon templates; every admin may read them. The
mini-program lists active products, and a logged-in user claims coupons into their wallet.
For orders: `quote_coupon` (what a coupon takes off), `redeem_coupon` (mark a claim used by
the order, exactly once) and `release_coupon` (give it back when the order is cancelled).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib import catalog
from chalicelib.auth import require_role
from chalicelib.clock import utcnow
from chalicelib.entities import (
    AuditEvent,
    ClaimRefusal,
    ClaimState,
    CouponClaim,
    CouponTemplate,
    Page,
    Principal,
    Product,
    Role,
)
from chalicelib.errors import Ended, InvalidInput, Missing, StateConflict
from chalicelib.observability import count
from chalicelib.store import get_store

EDITORS = (Role.OWNER, Role.OPS)


# --- products ------------------------------------------------------------------------------


def create_product(
    principal: Principal,
    product_id: str,
    name: str,
    price_fen: int,
    *,
    repurchase_days: int | None = None,
    active: bool = True,
) -> Product:
    """A new product of the caller's mini-program; its id is the caller's choice, once."""
    require_role(principal, *EDITORS)
    if not catalog.valid_id(product_id):
        raise InvalidInput("the product id must be 1-64 letters, digits, _ or -", code="invalid_product_id")
    _check_price(price_fen)
    now = utcnow()
    product = Product(principal.tenant, product_id, name, price_fen, active, repurchase_days, now, now)
    event = AuditEvent(f"product:{product_id}", "product.created", principal.actor, _product_data(product))
    if not get_store().products.create(product, event):
        raise StateConflict("a product with this id exists", code="product_exists")
    count("ProductsCreated")
    return product


def update_product(
    principal: Principal,
    product_id: str,
    name: str,
    price_fen: int,
    *,
    repurchase_days: int | None = None,
    active: bool = True,
) -> Product:
    """Replace a product's name, price, repurchase period and state; its creation time stays."""
    require_role(principal, *EDITORS)
    _check_price(price_fen)
    store = get_store()
    previous = store.products.get(principal.tenant, product_id) if catalog.valid_id(product_id) else None
    if previous is None or previous.updated_at is None:
        raise Missing("product not found", code="unknown_product")
    now = max(utcnow(), previous.updated_at + timedelta(microseconds=1))
    product = replace(
        previous, name=name, price_fen=price_fen, active=active, repurchase_days=repurchase_days, updated_at=now
    )
    data = {"before": _product_data(previous), "after": _product_data(product)}
    event = AuditEvent(f"product:{product_id}", "product.updated", principal.actor, data)
    if not store.products.update(product, previous, event):
        raise StateConflict("the product changed meanwhile: read it again and retry", code="product_changed")
    return product


def admin_products(principal: Principal, cursor: str | None, limit: int) -> Page[Product]:
    """Every product (active or not) by id, for any admin."""
    require_role(principal)
    return get_store().products.page(principal.tenant, cursor, limit, active_only=False)


def active_products(principal: Principal, cursor: str | None, limit: int) -> Page[Product]:
    """The products on sale, by id (what the mini-program shows)."""
    return get_store().products.page(principal.tenant, cursor, limit, active_only=True)


def _product_data(product: Product) -> dict[str, Any]:
    return {
        "name": product.name,
        "price_fen": product.price_fen,
        "active": product.active,
        "repurchase_days": product.repurchase_days,
    }


def _check_price(price_fen: int) -> None:
    if isinstance(price_fen, bool) or not isinstance(price_fen, int) or not 0 < price_fen <= catalog.MAX_PRICE_FEN:
        raise InvalidInput(f"price_fen must be an integer from 1 to {catalog.MAX_PRICE_FEN}", code="invalid_price")


# --- coupon templates ----------------------------------------------------------------------


def create_coupon(
    principal: Principal,
    *,
    coupon_id: str | None,
    name: str,
    threshold_fen: int,
    amount_fen: int,
    valid_from: datetime,
    valid_until: datetime,
    per_user_limit: int = 1,
    total_limit: int | None = None,
    product_ids: Sequence[str] = (),
) -> CouponTemplate:
    """A new coupon template; refused with every problem listed, or when a product is unknown."""
    require_role(principal, *EDITORS)
    now = utcnow()
    template = CouponTemplate(
        tenant=principal.tenant,
        coupon_id=coupon_id or f"cp{secrets.token_hex(6)}",
        name=name,
        threshold_fen=threshold_fen,
        amount_fen=amount_fen,
        valid_from=valid_from,
        valid_until=valid_until,
        per_user_limit=per_user_limit,
        total_limit=total_limit,
        product_ids=tuple(product_ids),
        created_at=now,
    )
    problems = catalog.template_problems(template, now)
    if not catalog.valid_id(template.coupon_id):
        problems.append({"field": "id", "message": "must be 1-64 letters, digits, _ or -"})
    if problems:
        raise InvalidInput("the coupon is not valid", code="invalid_coupon", details=problems)
    store = get_store()
    known = store.products.get_many(principal.tenant, template.product_ids)
    missing = [p for p in template.product_ids if p not in known]
    if missing:
        raise InvalidInput("the coupon names unknown products", code="unknown_product", details=missing)
    data = {"id": template.coupon_id, **catalog.template_fields(template)}
    event = AuditEvent(f"coupon:{template.coupon_id}", "coupon.created", principal.actor, data)
    if not store.coupons.create(template, event):
        raise StateConflict("a coupon with this id exists", code="coupon_exists")
    count("CouponsCreated")
    return template


def admin_coupons(principal: Principal, cursor: str | None, limit: int) -> Page[CouponTemplate]:
    """Every coupon template, latest expiry first, with how many were claimed."""
    require_role(principal)
    return get_store().coupons.page(principal.tenant, cursor, limit)


# --- claims --------------------------------------------------------------------------------


def claim(principal: Principal, coupon_id: str) -> tuple[CouponClaim, CouponTemplate]:
    """Put one of the coupon into the caller's wallet, within its per-user and total limits."""
    require_role(principal, Role.USER)
    template = _template(principal.tenant, coupon_id)
    now = utcnow()
    if now >= template.valid_until:
        raise Ended("the coupon has expired", code="expired")
    if now < template.valid_from:
        raise StateConflict("the coupon cannot be claimed yet", code="not_started")
    result = get_store().coupons.claim(template, principal.subject, now, principal.actor)
    if not isinstance(result, CouponClaim):
        if result is ClaimRefusal.SOLD_OUT:
            raise StateConflict("every coupon of this kind has been claimed", code="sold_out")
        raise StateConflict("you hold as many of this coupon as one user may", code="limit_reached")
    count("CouponClaims")
    return result, template


def my_coupons(principal: Principal) -> list[tuple[CouponClaim, CouponTemplate]]:
    """The caller's unused claims of coupons valid now, soonest expiry first."""
    require_role(principal, Role.USER)
    now = utcnow()
    store = get_store().coupons
    templates = {t.coupon_id: t for t in store.unexpired(principal.tenant, now) if catalog.is_valid_at(t, now)}
    claims = store.claims_of(principal.tenant, principal.subject, templates.values())
    mine = [(c, templates[c.coupon_id]) for c in claims if c.state is ClaimState.CLAIMED]
    return sorted(mine, key=lambda pair: (pair[1].valid_until, pair[0].coupon_id, pair[0].number))


# --- for orders ----------------------------------------------------------------------------


def quote_coupon(
    tenant: str, user: str, coupon_id: str, lines: Sequence[tuple[str, int]], at: datetime
) -> tuple[CouponTemplate, int]:
    """The template and the fen it takes off an order's (product_id, amount_fen) lines at `at`.

    Refused (404 `unknown_coupon`, 409 `coupon_not_held`, 409 `coupon_not_applicable`) unless
    the user holds an unused claim and the coupon takes something off (valid now, threshold met
    by the lines of its products). Nothing is written: redeem with `redeem_coupon`.
    """
    template = _template(tenant, coupon_id)
    if not any(c.state is ClaimState.CLAIMED for c in get_store().coupons.claims(tenant, coupon_id, user)):
        raise StateConflict("you hold no unused coupon of this kind", code="coupon_not_held")
    discount = catalog.coupon_discount(template, catalog.eligible_amount(template, lines), at)
    if discount <= 0:
        raise StateConflict("the coupon does not apply to this order", code="coupon_not_applicable")
    return template, discount


def redeem_coupon(tenant: str, user: str, coupon_id: str, order_id: str, at: datetime) -> CouponClaim:
    """Mark one of the user's unused claims used by `order_id` (idempotent per order)."""
    used = get_store().coupons.use(tenant, coupon_id, user, order_id, when=at, actor=f"user:{user}")
    if used is None:
        raise StateConflict("you hold no unused coupon of this kind", code="coupon_not_held")
    return used


def release_coupon(tenant: str, user: str, coupon_id: str, order_id: str, actor: str = "system:orders") -> bool:
    """Give back the claim `order_id` used (its order was cancelled); False if there was none."""
    return get_store().coupons.release(tenant, coupon_id, user, order_id, actor=actor) is not None


def _template(tenant: str, coupon_id: str) -> CouponTemplate:
    template = get_store().coupons.get(tenant, coupon_id) if catalog.valid_id(coupon_id) else None
    if template is None:
        raise Missing("coupon not found", code="unknown_coupon")
    return template
