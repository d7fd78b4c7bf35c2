"""Share codes and their scan counters."""

from __future__ import annotations

from datetime import datetime

from pynamodb.transactions import TransactWrite

from chalicelib import counters
from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Share
from chalicelib.store import audit, stats
from chalicelib.store.base import Transactions
from chalicelib.store.models import AuditModel, ShareModel


def _key(tenant: str, code: str) -> str:
    return f"{tenant}#{code}"


def to_share(item: ShareModel) -> Share:
    return Share(
        tenant=item.tenant,
        code=item.code,
        sharer=item.sharer,
        created_at=parse_iso(item.created_at),
        product_id=item.product_id,
        channel=item.channel,
        scans=int(item.scans or 0),
        binds=int(item.binds or 0),
        coupon_id=item.coupon_id,
    )


class ShareStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, share: Share, event: AuditEvent) -> bool:
        """Create a share code with its audit record; False if the code is taken."""
        item = ShareModel(
            pk=_key(share.tenant, share.code),
            tenant=share.tenant,
            code=share.code,
            sharer=share.sharer,
            product_id=share.product_id,
            channel=share.channel,
            coupon_id=share.coupon_id,
            created_at=iso(share.created_at),
            scans=0,
            binds=0,
        )
        record = audit.build(share.tenant, event, share.created_at, None)

        def body(tx):  # type: ignore[no-untyped-def]
            tx.save(item, condition=ShareModel.pk.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def get(self, tenant: str, code: str) -> Share | None:
        try:
            return to_share(ShareModel.get(_key(tenant, code)))
        except ShareModel.DoesNotExist:
            return None

    def count_scan(self, tenant: str, code: str, when: datetime) -> None:
        """Add one visit that bound nobody to the share's scan counter and the day's `scans`
        (the funnel's first step), in one transaction; a binding counts its own scan."""
        deltas = counters.scan(when, stats.timezone(tenant))

        def body(tx: TransactWrite) -> None:
            tx.update(
                ShareModel(_key(tenant, code)), actions=[ShareModel.scans.add(1)], condition=ShareModel.pk.exists()
            )
            stats.add(tx, tenant, deltas)

        self._tx.run(body)
