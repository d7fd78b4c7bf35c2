"""Parked stream records (`parked` table): the full record, its errors and attempts, its state.

One partition per tenant and source (`tenant#source`); the sort key tells the items apart:

- `rec#<item key>#<sequence>`: a parked record, kept for ever (a replayed one is history);
- `ent#<item key>`: how many records of the item wait; while above zero the stream parks the
  item's later records behind them;
- `all`: how many records of the tenant and source wait: one consistent read per batch and
  tenant tells the stream whether any item can be blocked at all;
- `try#<sequence>`: failed deliveries of a record not parked yet, expiring (TTL) after the
  stream's own 24 h retention.

Parking and replaying move a record and both counters in one transaction, so the counters
always equal the records waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso
from chalicelib.entities import Page
from chalicelib.parking import ParkedRecord, ParkedState, Reason, StreamRef, action_of, sequence_key
from chalicelib.retry import Retry
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import ParkedModel

ATTEMPTS_KEPT = timedelta(days=2)  # longer than a stream keeps its records (24 h)
ERROR_CHARS = 2000
CONFLICTS = Retry.at_once(5)  # another shard parking in the same tenant at the same moment
ALL = "all"


def partition(tenant: str, source: str) -> str:
    return f"{tenant}#{source}"


def record_sk(entity: str, sequence: str) -> str:
    return f"rec#{entity}#{sequence_key(sequence)}"


def _clip(error: str) -> str:
    return error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"


def _to_record(item: ParkedModel, *, with_content: bool) -> ParkedRecord:
    return ParkedRecord(
        tenant=str(item.tenant),
        source=str(item.source),
        entity=str(item.entity),
        sequence=str(item.sequence),
        reason=Reason(str(item.reason)),
        state=ParkedState(str(item.state)),
        attempts=int(item.attempts or 0),
        parked_at=str(item.parked_at),
        action=item.action,
        first_error=item.first_error,
        last_error=item.last_error,
        replayed_at=item.replayed_at,
        record=json.loads(item.record) if with_content and item.record else None,
    )


class ParkedStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    # --- the stream's side ------------------------------------------------------------------

    def blocked(self, source: str, items: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (tenant, item key) pairs among `items` that have a record waiting (consistent read)."""
        wanted = set(items)
        if not wanted:
            return set()
        tenants = {tenant for tenant, _ in wanted}
        keys = [(partition(tenant, source), ALL) for tenant in tenants]
        busy = {str(m.tenant) for m in ParkedModel.batch_get(keys, consistent_read=True) if (m.waiting or 0) > 0}
        if not busy:
            return set()
        keys = [(partition(t, source), f"ent#{entity}") for t, entity in wanted if t in busy]
        return {
            (str(m.tenant), str(m.entity))
            for m in ParkedModel.batch_get(keys, consistent_read=True)
            if (m.waiting or 0) > 0
        }

    def count_failure(self, source: str, ref: StreamRef, error: str, now: datetime) -> tuple[int, str]:
        """Count one failed delivery of a record; returns (failed deliveries so far, first error)."""
        item = ParkedModel(partition(ref.tenant, source), f"try#{sequence_key(ref.sequence)}")
        item.update(
            actions=[
                ParkedModel.attempts.add(1),
                ParkedModel.first_error.set(ParkedModel.first_error | _clip(error)),
                ParkedModel.last_error.set(_clip(error)),
                ParkedModel.expires_at.set(now + ATTEMPTS_KEPT),
            ]
        )
        return int(item.attempts or 0), str(item.first_error or error)

    def park(
        self,
        source: str,
        ref: StreamRef,
        record: Mapping[str, Any],
        *,
        reason: Reason,
        attempts: int,
        errors: tuple[str, str] | None,
        now: datetime,
    ) -> bool:
        """Park a record with its full content; False when it was parked already (a redelivery)."""
        at = iso(now)
        item = ParkedModel(
            partition(ref.tenant, source),
            record_sk(ref.entity, ref.sequence),
            tenant=ref.tenant,
            source=source,
            entity=ref.entity,
            sequence=ref.sequence,
            record=json.dumps(record, separators=(",", ":"), default=str),
            action=action_of(record),
            reason=reason.value,
            state=ParkedState.PARKED.value,
            attempts=attempts,
            first_error=_clip(errors[0]) if errors else None,
            last_error=_clip(errors[1]) if errors else None,
            parked_at=at,
            list_key=f"{ref.tenant}#{ParkedState.PARKED.value}",
            list_sk=f"{at}#{source}#{sequence_key(ref.sequence)}",
        )

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=ParkedModel.sk.does_not_exist())
            self._add_waiting(tx, ref.tenant, source, ref.entity, 1)

        return self._commit(body)

    # --- the redrive's side -----------------------------------------------------------------

    def waiting_items(self, tenant: str, source: str | None = None) -> list[tuple[str, str]]:
        """(source, item key) of every item with parked records, in the order they were parked.

        Read from the index (eventually consistent): it only says where to look; the records
        themselves are read consistently with `waiting_records`.
        """
        found: dict[tuple[str, str], None] = {}
        condition = ParkedModel.source == source if source else None
        for item in ParkedModel.by_state.query(
            f"{tenant}#{ParkedState.PARKED.value}", filter_condition=condition, attributes_to_get=["source", "entity"]
        ):
            found[(str(item.source), str(item.entity))] = None
        return list(found)

    def waiting_records(self, tenant: str, source: str, entity: str) -> list[ParkedRecord]:
        """An item's parked records with their content, in stream order (consistent read)."""
        items = ParkedModel.query(
            partition(tenant, source),
            ParkedModel.sk.startswith(f"rec#{entity}#"),
            filter_condition=ParkedModel.state == ParkedState.PARKED.value,
            consistent_read=True,
        )
        return [_to_record(item, with_content=True) for item in items]

    def mark_replayed(self, parked: ParkedRecord, now: datetime, actor: str) -> bool:
        """A redrive applied the record: it becomes history and stops blocking its item.

        False when it was no longer parked (a concurrent redrive marked it first)."""
        item = ParkedModel(partition(parked.tenant, parked.source), record_sk(parked.entity, parked.sequence))
        actions: list[Action] = [
            ParkedModel.state.set(ParkedState.REPLAYED.value),
            ParkedModel.list_key.set(f"{parked.tenant}#{ParkedState.REPLAYED.value}"),
            ParkedModel.replayed_at.set(iso(now)),
            ParkedModel.replayed_by.set(actor),
        ]

        def body(tx: TransactWrite) -> None:
            tx.update(item, actions=actions, condition=ParkedModel.state == ParkedState.PARKED.value)
            self._add_waiting(tx, parked.tenant, parked.source, parked.entity, -1)

        return self._commit(body)

    def failed_again(self, parked: ParkedRecord, error: str) -> None:
        """A redrive of the record failed: it stays parked, one attempt more."""
        item = ParkedModel(partition(parked.tenant, parked.source), record_sk(parked.entity, parked.sequence))
        item.update(
            actions=[ParkedModel.attempts.add(1), ParkedModel.last_error.set(_clip(error))],
            condition=ParkedModel.state == ParkedState.PARKED.value,
        )

    def waiting(self, tenant: str, source: str) -> int:
        """How many records of a tenant and source wait."""
        try:
            item = ParkedModel.get(partition(tenant, source), ALL, consistent_read=True)
        except ParkedModel.DoesNotExist:
            return 0
        return int(item.waiting or 0)

    # --- operators --------------------------------------------------------------------------

    def page(
        self, tenant: str, state: ParkedState, source: str | None, cursor: str | None, limit: int
    ) -> Page[ParkedRecord]:
        """A tenant's parked (or replayed) records, oldest parking first; `source` filters."""
        key = f"{tenant}#{state.value}"
        start = decode_cursor(cursor, hash_attr="list_key", hash_value=key)
        result = ParkedModel.by_state.query(
            key,
            filter_condition=(ParkedModel.source == source) if source else None,
            limit=limit,
            last_evaluated_key=start,
        )
        items = [_to_record(item, with_content=False) for item in result]
        return Page(items, encode_cursor(result.last_evaluated_key))

    # --- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _add_waiting(tx: TransactWrite, tenant: str, source: str, entity: str, delta: int) -> None:
        pk = partition(tenant, source)
        for sk, item_entity in ((f"ent#{entity}", entity), (ALL, None)):
            actions: list[Action] = [ParkedModel.waiting.add(delta), ParkedModel.tenant.set(tenant)]
            if item_entity is not None:
                actions.append(ParkedModel.entity.set(item_entity))
            tx.update(ParkedModel(pk, sk), actions=actions)

    def _commit(self, body: Any) -> bool:
        """Run a transaction whose first write is conditional: False when that condition failed.

        A conflict (another shard parking in the same tenant at the same moment) is retried."""
        for _ in CONFLICTS:
            outcome = self._tx.run(body)
            if outcome.committed:
                return True
            if not outcome.conflict:
                return False
        raise RuntimeError("parked table: transaction conflicts persisted, the delivery will be retried")
