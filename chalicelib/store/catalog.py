"""Products and coupons.

Products: one item per product (pk `tenant#product`); a tenant's catalog is read page by page
from the `by_tenant` index.

Coupons, one table (pk `tenant#coupon`):
- sk `template`: the template (canonical JSON in `data`) and its issue counter `claims`.
- sk `claim#<user>#<n>`: the user's n-th claim of the template, n = 1..per_user_limit, in state
  claimed → used (→ claimed again when its order is cancelled). The key is the per-user limit:
  a claim is a put with `does_not_exist()`, so however many requests race, a user never holds
  more than the limit; a total limit is a condition on the counter in the same transaction.
- pk `tenant#*` (no coupon id can be `*`), sk `until#<valid_until>#<coupon>`: the tenant's
  directory of templates ordered by expiry, so that listing them, or finding those not yet
  expired, is one query, never a scan. Templates never change, so the copy cannot go stale.

Every change writes its audit record in the same transaction, chained to the entity's
previous record (entities `product:<id>`, `coupon:<id>`, `claim:<coupon>:<user>:<n>`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.catalog import template_fields
from chalicelib.clock import iso, parse_iso, utcnow
from chalicelib.entities import AuditEvent, ClaimRefusal, ClaimState, CouponClaim, CouponTemplate, Page, Product
from chalicelib.errors import InvalidInput, StateConflict
from chalicelib.retry import Retry
from chalicelib.store import audit
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AuditModel, CouponModel, ProductModel

TEMPLATE_SK = "template"
DIRECTORY = "*"
# transaction conflicts under contention (many claims of one template at once): 5-25 ms x attempt
COUPON_CONTENTION = Retry(tries=12, first_s=0.025, growth="linear", jitter=0.8)


def _key(tenant: str, id_: str) -> str:
    return f"{tenant}#{id_}"


def _chained(tenant: str, event: AuditEvent, now: datetime) -> AuditModel:
    """The event's audit record, chained to the entity's newest record (`audit.action_record`)."""
    return audit.action_record(tenant, event, now)


def _cursor(cursor: str | None, *, hash_attr: str, hash_value: str, keys: set[str]) -> dict[str, Any] | None:
    start = decode_cursor(cursor, hash_attr=hash_attr, hash_value=hash_value)
    if start is not None and set(start) != keys:
        raise InvalidInput("cursor does not belong to this list", code="invalid_cursor")
    return start


# --- products ------------------------------------------------------------------------------


def to_product(item: ProductModel) -> Product:
    return Product(
        tenant=item.tenant,
        id=item.product_id,
        name=item.name,
        price_fen=int(item.price_fen),
        active=bool(item.active),
        repurchase_days=int(item.repurchase_days) if item.repurchase_days is not None else None,
        created_at=parse_iso(item.created_at) if item.created_at else None,
        updated_at=parse_iso(item.updated_at) if item.updated_at else None,
    )


class ProductStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, product: Product, event: AuditEvent) -> bool:
        """Create a product with its audit record; False if the id is taken."""
        if product.created_at is None:
            raise ValueError("a new product needs created_at")
        item = ProductModel(
            pk=_key(product.tenant, product.id),
            tenant=product.tenant,
            product_id=product.id,
            name=product.name,
            price_fen=product.price_fen,
            active=product.active,
            repurchase_days=product.repurchase_days,
            created_at=iso(product.created_at),
            updated_at=iso(product.updated_at or product.created_at),
        )
        record = audit.build(product.tenant, event, product.created_at, None)

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=ProductModel.pk.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def update(self, product: Product, previous: Product, event: AuditEvent) -> bool:
        """Replace the product's fields (not created_at), unless it changed since `previous` was read."""
        if product.updated_at is None or previous.updated_at is None:
            raise ValueError("an update needs updated_at on both versions")
        days = ProductModel.repurchase_days
        actions: list[Action] = [
            ProductModel.name.set(product.name),
            ProductModel.price_fen.set(product.price_fen),
            ProductModel.active.set(product.active),
            days.set(product.repurchase_days) if product.repurchase_days is not None else days.remove(),
            ProductModel.updated_at.set(iso(product.updated_at)),
        ]
        unchanged = ProductModel.pk.exists() & (ProductModel.updated_at == iso(previous.updated_at))
        record = _chained(product.tenant, event, product.updated_at)

        def body(tx: TransactWrite) -> None:
            tx.update(ProductModel(_key(product.tenant, product.id)), actions=actions, condition=unchanged)
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def get(self, tenant: str, product_id: str) -> Product | None:
        try:
            return to_product(ProductModel.get(_key(tenant, product_id), consistent_read=True))
        except ProductModel.DoesNotExist:
            return None

    def get_many(self, tenant: str, product_ids: Iterable[str]) -> dict[str, Product]:
        """The products of these ids that exist, by id (batch get, consistent: prices for orders)."""
        keys = list(dict.fromkeys(_key(tenant, pid) for pid in product_ids))
        if not keys:
            return {}
        return {item.product_id: to_product(item) for item in ProductModel.batch_get(keys, consistent_read=True)}

    def page(self, tenant: str, cursor: str | None, limit: int, *, active_only: bool) -> Page[Product]:
        """A page of the tenant's products by id; with `active_only`, pages skip inactive ones."""
        start = _cursor(cursor, hash_attr="tenant", hash_value=tenant, keys={"pk", "tenant", "product_id"})
        result = ProductModel.by_tenant.query(
            tenant,
            filter_condition=(ProductModel.active == True) if active_only else None,  # noqa: E712
            last_evaluated_key=start,
            limit=limit,
            page_size=limit,
        )
        items = [to_product(item) for item in result]
        return Page(items=items, next_cursor=encode_cursor(result.last_evaluated_key))


# --- coupons -------------------------------------------------------------------------------


def to_template(item: CouponModel) -> CouponTemplate:
    data = json.loads(item.data)
    return CouponTemplate(
        tenant=item.tenant,
        coupon_id=item.coupon_id,
        name=data["name"],
        threshold_fen=int(data["threshold_fen"]),
        amount_fen=int(data["amount_fen"]),
        valid_from=parse_iso(data["valid_from"]),
        valid_until=parse_iso(data["valid_until"]),
        per_user_limit=int(data["per_user_limit"]),
        total_limit=int(data["total_limit"]) if data["total_limit"] is not None else None,
        product_ids=tuple(data["product_ids"]),
        created_at=parse_iso(item.created_at),
        issued=int(item.claims or 0) if item.sk == TEMPLATE_SK else 0,
    )


def _claim_sk(user: str, number: int) -> str:
    return f"claim#{user}#{number}"


def _claim_entity(claim: CouponClaim) -> str:
    return f"claim:{claim.coupon_id}:{claim.user}:{claim.number}"


def _claim_data(claim: CouponClaim, version: int) -> str:
    """The claim's JSON; `version` counts its changes, so a condition on it sees use-then-release."""
    return audit.canonical(
        {
            "user": claim.user,
            "number": claim.number,
            "claimed_at": iso(claim.claimed_at),
            "order_id": claim.order_id,
            "used_at": iso(claim.used_at) if claim.used_at else None,
            "version": version,
        }
    )


def to_claim(item: CouponModel) -> CouponClaim:
    data = json.loads(item.data)
    return CouponClaim(
        tenant=item.tenant,
        coupon_id=item.coupon_id,
        user=data["user"],
        number=int(data["number"]),
        state=ClaimState(item.state),
        claimed_at=parse_iso(data["claimed_at"]),
        order_id=data.get("order_id"),
        used_at=parse_iso(data["used_at"]) if data.get("used_at") else None,
    )


def _version(item: CouponModel) -> int:
    return int(json.loads(item.data).get("version", 0))


class CouponStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    # templates

    def create(self, template: CouponTemplate, event: AuditEvent) -> bool:
        """Create a template, its directory entry and audit record; False if the id is taken."""
        created = template.created_at or utcnow()
        data = audit.canonical(template_fields(template))
        item, entry = (
            CouponModel(
                pk=pk, sk=sk, tenant=template.tenant, coupon_id=template.coupon_id, data=data, created_at=iso(created)
            )
            for pk, sk in (
                (_key(template.tenant, template.coupon_id), TEMPLATE_SK),
                (_key(template.tenant, DIRECTORY), f"until#{iso(template.valid_until)}#{template.coupon_id}"),
            )
        )
        record = audit.build(template.tenant, event, created, None)

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=CouponModel.pk.does_not_exist())
            tx.save(entry, condition=CouponModel.pk.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def get(self, tenant: str, coupon_id: str) -> CouponTemplate | None:
        try:
            return to_template(CouponModel.get(_key(tenant, coupon_id), TEMPLATE_SK, consistent_read=True))
        except CouponModel.DoesNotExist:
            return None

    def page(self, tenant: str, cursor: str | None, limit: int) -> Page[CouponTemplate]:
        """A page of the tenant's templates, latest expiry first, with their issue counts."""
        directory = _key(tenant, DIRECTORY)
        start = _cursor(cursor, hash_attr="pk", hash_value=directory, keys={"pk", "sk"})
        result = CouponModel.query(directory, scan_index_forward=False, last_evaluated_key=start, limit=limit)
        templates = [to_template(item) for item in result]
        keys = [(_key(tenant, t.coupon_id), TEMPLATE_SK) for t in templates]
        counts = CouponModel.batch_get(keys, attributes_to_get=["pk", "claims"]) if keys else []
        issued = {i.pk: int(i.claims or 0) for i in counts}
        items = [replace(t, issued=issued.get(_key(tenant, t.coupon_id), 0)) for t in templates]
        return Page(items=items, next_cursor=encode_cursor(result.last_evaluated_key))

    def unexpired(self, tenant: str, at: datetime) -> list[CouponTemplate]:
        """Every template whose validity ends after `at` (issue counts not read)."""
        directory = _key(tenant, DIRECTORY)
        return [to_template(i) for i in CouponModel.query(directory, CouponModel.sk > f"until#{iso(at)}")]

    # claims

    def claims(self, tenant: str, coupon_id: str, user: str) -> list[CouponClaim]:
        """The user's claims of one template, by number."""
        return sorted((to_claim(i) for i in self._claim_items(tenant, coupon_id, user)), key=lambda c: c.number)

    def claims_of(self, tenant: str, user: str, templates: Iterable[CouponTemplate]) -> list[CouponClaim]:
        """The user's claims of these templates (one batch get over every possible claim key)."""
        keys = [
            (_key(tenant, t.coupon_id), _claim_sk(user, n)) for t in templates for n in range(1, t.per_user_limit + 1)
        ]
        if not keys:
            return []
        found = [to_claim(i) for i in CouponModel.batch_get(keys, consistent_read=True)]
        return sorted(found, key=lambda c: (c.coupon_id, c.number))

    def claim(self, template: CouponTemplate, user: str, when: datetime, actor: str) -> CouponClaim | ClaimRefusal:
        """Give the user their next claim of `template`, within its per-user and total limits."""
        taken = {c.number for c in self.claims(template.tenant, template.coupon_id, user)}
        free = [n for n in range(1, template.per_user_limit + 1) if n not in taken]
        counted = CouponModel(_key(template.tenant, template.coupon_id), TEMPLATE_SK)
        counter = CouponModel.pk.exists()
        if template.total_limit is not None:
            counter &= CouponModel.claims < template.total_limit
        for attempt in COUPON_CONTENTION:
            if not free:
                return ClaimRefusal.LIMIT_REACHED
            claim = CouponClaim(template.tenant, template.coupon_id, user, free[0], ClaimState.CLAIMED, when)
            item = CouponModel(
                pk=_key(template.tenant, template.coupon_id),
                sk=_claim_sk(user, claim.number),
                tenant=template.tenant,
                coupon_id=template.coupon_id,
                data=_claim_data(claim, 1),
                state=ClaimState.CLAIMED.value,
                created_at=iso(when),
            )
            data = {"coupon_id": template.coupon_id, "user": user, "number": claim.number}
            event = AuditEvent(entity=_claim_entity(claim), action="coupon.claimed", actor=actor, data=data)
            record = audit.build(template.tenant, event, when, None)

            def body(tx: TransactWrite, item: CouponModel = item, record: AuditModel = record) -> None:
                tx.save(item, condition=CouponModel.pk.does_not_exist())  # put 0
                tx.save(record, condition=AuditModel.pk.does_not_exist())  # put 1
                tx.update(counted, actions=[CouponModel.claims.add(1)], condition=counter)  # update 2

            outcome = self._tx.run(body)
            if outcome.committed:
                return claim
            if 2 in outcome.failed_items:
                return ClaimRefusal.SOLD_OUT
            if 0 in outcome.failed_items:
                free.pop(0)  # another request took this number meanwhile
            else:
                COUPON_CONTENTION.pause(attempt)
        raise StateConflict("the coupon is busy, try again", code="busy")

    def use(
        self,
        tenant: str,
        coupon_id: str,
        user: str,
        order_id: str,
        *,
        when: datetime | None = None,
        actor: str | None = None,
    ) -> CouponClaim | None:
        """Redeem one of the user's unused claims for `order_id`; None when they hold none.

        The write is conditional on the claim being unused, so a claim is never used twice.
        Idempotent: a claim already used by `order_id` is returned as it is.
        """
        when = when or utcnow()
        for attempt in COUPON_CONTENTION:
            items = self._claim_items(tenant, coupon_id, user)
            for item in items:
                claim = to_claim(item)
                if claim.state is ClaimState.USED and claim.order_id == order_id:
                    return claim
            unused = [i for i in items if i.state == ClaimState.CLAIMED.value]
            if not unused:
                return None
            item = min(unused, key=lambda i: to_claim(i).number)
            used = replace(to_claim(item), state=ClaimState.USED, order_id=order_id, used_at=when)
            data = {"coupon_id": coupon_id, "order_id": order_id}
            event = AuditEvent(_claim_entity(used), "coupon.used", actor or f"user:{user}", data)
            if self._move(item, used, ClaimState.CLAIMED, event, when):
                return used
            COUPON_CONTENTION.pause(attempt)
        raise StateConflict("the coupon is busy, try again", code="busy")

    def release(
        self,
        tenant: str,
        coupon_id: str,
        user: str,
        order_id: str,
        *,
        when: datetime | None = None,
        actor: str = "system:orders",
    ) -> CouponClaim | None:
        """Give back the claim `order_id` used (the order was cancelled); None when it used none.

        Idempotent: once released, there is nothing left to release for that order.
        """
        when = when or utcnow()
        for attempt in COUPON_CONTENTION:
            item = next(
                (
                    i
                    for i in self._claim_items(tenant, coupon_id, user)
                    if i.state == ClaimState.USED.value and to_claim(i).order_id == order_id
                ),
                None,
            )
            if item is None:
                return None
            released = replace(to_claim(item), state=ClaimState.CLAIMED, order_id=None, used_at=None)
            data = {"coupon_id": coupon_id, "order_id": order_id}
            event = AuditEvent(_claim_entity(released), "coupon.released", actor, data)
            if self._move(item, released, ClaimState.USED, event, when):
                return released
            COUPON_CONTENTION.pause(attempt)
        raise StateConflict("the coupon is busy, try again", code="busy")

    def _move(
        self, item: CouponModel, claim: CouponClaim, from_state: ClaimState, event: AuditEvent, when: datetime
    ) -> bool:
        """Write the claim's new state if it is still in `from_state` and unchanged since `item` was read."""
        record = _chained(claim.tenant, event, when)
        condition = (CouponModel.state == from_state.value) & (CouponModel.data == item.data)
        actions: list[Action] = [
            CouponModel.state.set(claim.state.value),
            CouponModel.data.set(_claim_data(claim, _version(item) + 1)),
        ]

        def body(tx: TransactWrite) -> None:
            tx.update(CouponModel(item.pk, item.sk), actions=actions, condition=condition)
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def _claim_items(self, tenant: str, coupon_id: str, user: str) -> list[CouponModel]:
        mine = CouponModel.sk.startswith(f"claim#{user}#")
        return list(CouponModel.query(_key(tenant, coupon_id), mine, consistent_read=True))
