"""Plans: immutable versions per tenant (one item per version) and which one is active (on the
tenant's item). Creating and activating a version are each one transaction with their audit record."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page, StoredPlan
from chalicelib.store import audit
from chalicelib.store.audit import canonical
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AuditModel, PlanModel, TenantModel


def _to_plan(item: PlanModel) -> StoredPlan:
    return StoredPlan(
        tenant=item.tenant,
        version=int(item.version),
        body=json.loads(item.body),
        created_at=parse_iso(item.created_at),
        created_by=item.created_by,
        activated_at=parse_iso(item.activated_at) if item.activated_at else None,
    )


class PlanStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, tenant: str, body: dict[str, Any], actor: str, when: datetime) -> StoredPlan | None:
        """Store the next version (immutable from then on); None if another writer took it."""
        latest = next(iter(PlanModel.query(tenant, scan_index_forward=False, limit=1, consistent_read=True)), None)
        version = int(latest.version) + 1 if latest else 1
        body = {**body, "version": version}
        item = PlanModel(tenant=tenant, version=version, body=canonical(body), created_at=iso(when), created_by=actor)
        event = AuditEvent(entity=f"plan:{version}", action="plan.created", actor=actor, data=body)
        record = audit.build(tenant, event, when, None)

        def write(tx: TransactWrite) -> None:
            tx.save(item, condition=PlanModel.version.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return _to_plan(item) if self._tx.run(write).committed else None

    def get(self, tenant: str, version: int) -> StoredPlan | None:
        try:
            return _to_plan(PlanModel.get(tenant, version, consistent_read=True))
        except PlanModel.DoesNotExist:
            return None

    def list(self, tenant: str, cursor: str | None, limit: int) -> Page[StoredPlan]:
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        result = PlanModel.query(tenant, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        return Page([_to_plan(i) for i in result], encode_cursor(result.last_evaluated_key))

    def activate(self, tenant: str, version: int, actor: str, when: datetime) -> bool:
        """Make `version` the tenant's active plan; False if that version does not exist."""
        event = AuditEvent(entity=f"plan:{version}", action="plan.activated", actor=actor, data={"version": version})
        record = audit.action_record(tenant, event, when)  # chained to the plan's creation (and earlier activations)

        def write(tx: TransactWrite) -> None:
            tx.update(
                PlanModel(tenant, version),
                actions=[PlanModel.activated_at.set(PlanModel.activated_at | iso(when))],
                condition=PlanModel.version.exists(),
            )
            tx.update(
                TenantModel(tenant),
                actions=[TenantModel.active_plan.set(version)],
                condition=TenantModel.tenant.exists(),
            )
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(write).committed

    def active_version(self, tenant: str) -> int | None:
        try:
            item = TenantModel.get(tenant, consistent_read=True, attributes_to_get=["tenant", "active_plan"])
        except TenantModel.DoesNotExist:
            return None
        return int(item.active_plan) if item.active_plan is not None else None
