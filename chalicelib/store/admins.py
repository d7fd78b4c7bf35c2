"""Admin accounts (operators).

Operators: one item per operator (pk `tenant#username`); a tenant's operators are read page by
page from the `by_tenant` index (it projects no password hash). Every change made through the
console is one transaction: the operator's item, guarded by the token version that was read,
its audit records (entity `operator:<username>`, chained), and when the change takes an owner
away, a condition that another named owner is still an enabled owner at commit time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import Admin, AuditEvent, Page, Role
from chalicelib.errors import InvalidInput
from chalicelib.operators import Operator, Written
from chalicelib.retry import Retry
from chalicelib.settings import get_settings
from chalicelib.store import audit
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AdminModel, AuditModel

CONFLICTS = Retry.at_once(3)  # transaction conflicts: another change of the same operator at the same moment
INDEX_KEYS = {"pk", "tenant", "username"}


def _to_operator(item: AdminModel) -> Operator:
    return Operator(
        tenant=item.tenant,
        username=item.username,
        role=Role(item.role),
        disabled=bool(item.disabled),
        created_at=parse_iso(item.created_at) if item.created_at else None,
        token_version=int(item.token_version or 0),
    )


def _records(tenant: str, events: Sequence[AuditEvent], when: datetime) -> list[AuditModel]:
    """The events' audit records, chained to the entity's newest record and to each other (one
    microsecond apart, so that they sort in the order they chain)."""
    records: list[AuditModel] = []
    for i, event in enumerate(events):
        at = when + timedelta(microseconds=i)
        records.append(
            audit.build(tenant, event, at, records[-1].hash) if records else audit.action_record(tenant, event, at)
        )
    return records


class AdminStore:
    def __init__(self, tx: Transactions | None = None) -> None:
        self._tx = tx

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

    # --- operators (the console's operators page) ---------------------------------------------

    def operator(self, tenant: str, username: str) -> Operator | None:
        try:
            return _to_operator(AdminModel.get(f"{tenant}#{username}", consistent_read=True))
        except AdminModel.DoesNotExist:
            return None

    def page(self, tenant: str, cursor: str | None, limit: int) -> Page[Operator]:
        """A tenant's operators by username."""
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        if start is not None and set(start) != INDEX_KEYS:
            raise InvalidInput("cursor does not belong to this list", code="invalid_cursor")
        result = AdminModel.by_tenant.query(tenant, limit=limit, last_evaluated_key=start)
        items = [_to_operator(item) for item in result]
        return Page(items, encode_cursor(result.last_evaluated_key))

    def enabled_owners(self, tenant: str) -> list[str]:
        """Usernames of the tenant's enabled owners, from the index (eventually consistent: a
        change that relies on one of them proves it with a condition in its transaction)."""
        enabled_owner = (AdminModel.role == Role.OWNER.value) & (AdminModel.disabled == False)  # noqa: E712
        return [item.username for item in AdminModel.by_tenant.query(tenant, filter_condition=enabled_owner)]

    def create(self, admin: Admin, when: datetime, event: AuditEvent) -> bool:
        """Create an operator with its audit record; False if the username is taken."""
        item = AdminModel(
            pk=f"{admin.tenant}#{admin.username}",
            tenant=admin.tenant,
            username=admin.username,
            password_hash=admin.password_hash,
            role=admin.role.value,
            created_at=iso(when),
            disabled=admin.disabled,
            token_version=admin.token_version,
        )
        for _ in CONFLICTS:
            records = _records(admin.tenant, [event], when)

            def body(tx: TransactWrite, records: list[AuditModel] = records) -> None:
                tx.save(item, condition=AdminModel.pk.does_not_exist())
                for record in records:
                    tx.save(record, condition=AuditModel.pk.does_not_exist())

            outcome = self._transactions().run(body)
            if outcome.committed:
                return True
            if not outcome.conflict:
                return False
        raise RuntimeError("operator creation kept conflicting")

    def change(
        self,
        before: Operator,
        after: Operator,
        events: Sequence[AuditEvent],
        when: datetime,
        *,
        password_hash: str | None = None,
        keeper: str | None = None,
    ) -> Written:
        """Write `after` (and a new password hash) over `before`, unless the operator changed
        since `before` was read, with one audit record per event; `keeper` names an owner who
        must still be an enabled owner when the transaction commits."""
        actions: list[Action] = [
            AdminModel.role.set(after.role.value),
            AdminModel.disabled.set(after.disabled),
            AdminModel.token_version.set(after.token_version),
        ]
        if password_hash is not None:
            actions.append(AdminModel.password_hash.set(password_hash))
        unchanged = AdminModel.pk.exists() & (AdminModel.token_version == before.token_version)
        records = _records(before.tenant, events, when)

        def body(tx: TransactWrite) -> None:
            if keeper is not None:
                still_owner = (AdminModel.role == Role.OWNER.value) & (AdminModel.disabled == False)  # noqa: E712
                tx.condition_check(AdminModel, f"{before.tenant}#{keeper}", condition=still_owner)
            for record in records:
                tx.save(record, condition=AuditModel.pk.does_not_exist())
            tx.update(AdminModel(f"{before.tenant}#{before.username}"), actions=actions, condition=unchanged)

        outcome = self._transactions().run(body)
        if outcome.committed:
            return Written.DONE
        # PynamoDB sends condition checks first, then puts, then updates: the update is last.
        update_index = (1 if keeper is not None else 0) + len(records)
        if keeper is not None and 0 in outcome.failed_items and update_index not in outcome.failed_items:
            return Written.NO_KEEPER
        return Written.STALE

    def _transactions(self) -> Transactions:
        """The store's transactions (`build_store` may pass them; else made on first use)."""
        if self._tx is None:
            self._tx = Transactions(get_settings())
        return self._tx
