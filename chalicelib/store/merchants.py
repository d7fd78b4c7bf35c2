"""Merchant credentials of the order API: one item per merchant id, its tenant fixed at creation.

Every change is conditional on the version read before it and writes its audit record in the
same transaction, so two operators rotating at once cannot both win, and no change goes
unrecorded.
"""

from __future__ import annotations

from datetime import datetime

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso
from chalicelib.entities import AuditEvent, MerchantCredential
from chalicelib.store import audit
from chalicelib.store.base import Transactions
from chalicelib.store.models import AuditModel, MerchantModel


def _credential(item: MerchantModel) -> MerchantCredential:
    return MerchantCredential(
        merchant=item.merchant,
        tenant=item.tenant,
        name=item.name,
        current=item.current,
        previous=item.previous,
        disabled=bool(item.disabled),
        version=int(item.version or 1),
    )


class MerchantStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def get(self, merchant: str) -> MerchantCredential | None:
        try:
            return _credential(MerchantModel.get(merchant, consistent_read=True))
        except MerchantModel.DoesNotExist:
            return None

    def create(self, credential: MerchantCredential, event: AuditEvent, when: datetime) -> bool:
        """Create the merchant unless its id exists (in any tenant); False when it does."""
        item = MerchantModel(
            merchant=credential.merchant,
            tenant=credential.tenant,
            name=credential.name,
            current=credential.current,
            previous=credential.previous,
            created_at=iso(when),
            disabled=credential.disabled,
            version=1,
        )
        record = audit.action_record(credential.tenant, event, when)

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=MerchantModel.merchant.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def replace(self, before: MerchantCredential, after: MerchantCredential, event: AuditEvent, when: datetime) -> bool:
        """Store `after` if the item is still at `before`'s version; False when it moved on."""
        item = MerchantModel(before.merchant)
        actions = [
            MerchantModel.name.set(after.name),
            MerchantModel.current.set(after.current),
            MerchantModel.disabled.set(after.disabled),
            MerchantModel.version.set(before.version + 1),
            MerchantModel.rotated_at.set(iso(when)) if after.current != before.current else None,
            MerchantModel.previous.set(after.previous) if after.previous else MerchantModel.previous.remove(),
        ]
        record = audit.action_record(before.tenant, event, when)

        def body(tx: TransactWrite) -> None:
            tx.update(
                item,
                actions=[a for a in actions if a is not None],
                condition=(MerchantModel.version == before.version) & (MerchantModel.tenant == before.tenant),
            )
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed
