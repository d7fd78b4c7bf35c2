"""What the report counters are rebuilt from (`chalicelib.services.recount`), the counters stored
now, and the write that brings them to what they should be.

Run from the command line (`python -m devtools.recount`) with an operator's credentials: no
function reaches this module, so none is granted its Scans (infra/iam.py). It reads a tenant's
users, orders, shares, ledger lines and withdrawals with Scans filtered by tenant, and the audit
records of the entities whose counters depend on when something happened (each user's bindings
and moves, each refunded order's refunds, each paid withdrawal's payout) with one Query per
entity: a repair tool, run rarely, whose reads grow with the tables.

Repairs chain their audit records (entity `stats`) through a guard item (`<tenant>#recount`,
`chain`) that holds the chain's head: each correcting transaction requires the head it read, so
two repairs at once cannot both chain to the same record (the second is refused: run it again).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import parse_iso, utcnow
from chalicelib.counters import Deltas
from chalicelib.entities import AuditEvent
from chalicelib.ledger import LedgerLine
from chalicelib.orders import Order
from chalicelib.settings import get_settings
from chalicelib.store import stats
from chalicelib.store.audit import action_record
from chalicelib.store.backfill import sold
from chalicelib.store.base import Transactions
from chalicelib.store.ledger import to_line
from chalicelib.store.models import (
    AuditModel,
    LedgerModel,
    OrderModel,
    ShareModel,
    StatsModel,
    UserModel,
    WithdrawalModel,
)
from chalicelib.store.orders import to_order

NOT_REPORTS = ("buyer#", "recount")  # first-order markers (not counts); the repairs' chain guard
GUARD = ("recount", "chain")
CHUNK = 90  # counter items per correcting transaction (with its audit record, under 100)


@dataclass(frozen=True, slots=True)
class Record:
    """One audit record of an entity, as the counters replay it."""

    action: str
    data: Mapping[str, object]
    at: datetime
    version: int  # the entity's version the record follows (0: a record of an action)


@dataclass(frozen=True, slots=True)
class Person:
    """A user with the audit records of its versions, oldest first."""

    uid: str
    promoter: bool
    history: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Payout:
    """A withdrawal: its amount, when it was requested, and when it was paid out (if it was)."""

    amount_fen: int
    requested_at: datetime
    paid_at: datetime | None


def history(tenant: str, entity: str) -> tuple[Record, ...]:
    """An entity's audit records in the order of its versions (its records of actions, which
    follow no version, by time): the sort key starts with the time, which clocks may skew."""
    records = [
        Record(rec.action, json.loads(rec.data), parse_iso(rec.at), _version(rec.sk))
        for rec in AuditModel.query(f"{tenant}#{entity}", consistent_read=True)
    ]
    return tuple(sorted(records, key=lambda r: (r.version, r.at)))


def _version(sk: str) -> int:
    """The version in a version record's sort key (`audit.version_sk`: `<at>#v<version>`), else 0."""
    tail = sk.rsplit("#", 1)[-1]
    return int(tail[1:]) if tail.startswith("v") and tail[1:].isdigit() else 0


def people(tenant: str) -> Iterator[Person]:
    for item in UserModel.scan(UserModel.tenant == tenant, attributes_to_get=["uid", "promoter"]):
        yield Person(item.uid, item.promoter is not False, history(tenant, f"user:{item.uid}"))


def paid_orders(tenant: str) -> Iterator[tuple[Order, tuple[Record, ...]]]:
    """Every order that reached payment, with its audit records: the counters follow when its
    payment and its refunds were written (a payment's `paid_at` is WeChat's or the merchant's
    time, which may be days before), and merchants' refunds leave no refund entry on the order."""
    for item in OrderModel.scan(OrderModel.tenant == tenant):
        if not sold(item.status, item.paid_at):
            continue
        order = to_order(item)
        yield order, history(tenant, f"order:{order.id}")


def channels(tenant: str) -> dict[str, str | None]:
    """Each share code's channel."""
    return {
        item.code: item.channel
        for item in ShareModel.scan(ShareModel.tenant == tenant, attributes_to_get=["code", "channel"])
    }


def ledger_lines(tenant: str) -> Iterator[LedgerLine]:
    for item in LedgerModel.scan(LedgerModel.tenant == tenant):
        yield to_line(item)


def payouts(tenant: str) -> Iterator[Payout]:
    read = ["withdrawal_id", "amount_fen", "created_at", "state"]
    for item in WithdrawalModel.scan(WithdrawalModel.tenant == tenant, attributes_to_get=read):
        paid_at = None
        if item.state == "paid":
            paid = [r.at for r in history(tenant, f"withdrawal:{item.withdrawal_id}") if r.action == "withdrawal.paid"]
            paid_at = paid[0] if paid else None
        yield Payout(int(item.amount_fen), parse_iso(item.created_at), paid_at)


def stored(tenant: str) -> Deltas:
    """Every report counter of the tenant as stored now (zeros and first-order markers left out)."""
    found: Deltas = {}
    prefix = f"{tenant}#"
    for item in StatsModel.scan(StatsModel.pk.startswith(prefix)):
        scope = item.pk.removeprefix(prefix)
        if scope.startswith(NOT_REPORTS):
            continue
        values = stats.counts_of(item)
        if values:
            found[(scope, item.period)] = values
    return found


def correct(tenant: str, differences: Deltas, actor: str) -> int:
    """ADD each difference to its counter, a chunk of counter items per transaction with an audit
    record (`stats.recounted`, the differences it added); the number of transactions."""
    tx = Transactions(get_settings())
    guard = StatsModel(f"{tenant}#{GUARD[0]}", GUARD[1])
    keys = sorted(differences)
    written = 0
    for start in range(0, len(keys), CHUNK):
        chunk = {key: differences[key] for key in keys[start : start + CHUNK]}
        data = {"added": [[scope, period, counters] for (scope, period), counters in sorted(chunk.items())]}
        record = action_record(
            tenant, AuditEvent(entity="stats", action="stats.recounted", actor=actor, data=data), utcnow()
        )
        head: Any = StatsModel.pk.does_not_exist()  # the first repair starts the chain and its guard
        if record.prev_hash:  # (or continues a chain of repairs made before the guard existed)
            head = (StatsModel.ref == record.prev_hash) | StatsModel.pk.does_not_exist()

        def body(write: TransactWrite, chunk: Deltas = chunk, record: AuditModel = record, head: Any = head) -> None:
            write.save(record, condition=AuditModel.pk.does_not_exist())
            write.update(guard, actions=[StatsModel.ref.set(record.hash)], condition=head)
            stats.add(write, tenant, chunk)

        outcome = tx.run(body)
        if not outcome.committed:
            raise RuntimeError(f"the correcting transaction of {len(chunk)} counters was refused: run again")
        written += 1
    return written
