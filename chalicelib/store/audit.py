"""The audit trail: append-only records, each hashed over its content and its predecessor."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib import counters
from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent
from chalicelib.store import shards, stats
from chalicelib.store.base import Transactions, conditional_write
from chalicelib.store.models import AuditModel, ShareModel

DAY_SHARDS = 8
GENESIS = "0" * 64


def canonical(data: object) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(tenant: str, event: AuditEvent, at: str, prev_hash: str) -> str:
    """sha256 over the record's content and the previous record's hash of the same entity."""
    body = canonical(
        {
            "tenant": tenant,
            "entity": event.entity,
            "action": event.action,
            "actor": event.actor,
            "at": at,
            "data": event.data,
            "prev": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def build(
    tenant: str, event: AuditEvent, when: datetime, prev_hash: str | None, *, record_id: str | None = None
) -> AuditModel:
    """An audit item ready to be put (with `does_not_exist`) inside a transaction.

    `record_id` makes the sort key deterministic, so that only one such record can exist.
    """
    at = iso(when)
    prev = prev_hash or GENESIS
    digest = record_hash(tenant, event, at, prev)
    shard = int(digest[:8], 16) % DAY_SHARDS
    return AuditModel(
        pk=f"{tenant}#{event.entity}",
        sk=f"{at}#{record_id or secrets.token_hex(4)}",
        tenant=tenant,
        entity=event.entity,
        action=event.action,
        actor=event.actor,
        at=at,
        data=canonical(event.data),
        hash=digest,
        prev_hash=prev,
        day_shard=f"{tenant}#{at[:10]}#{shard}",
    )


def for_entity(tenant: str, entity: str, *, limit: int = 100) -> Iterator[AuditModel]:
    """The entity's records, oldest first."""
    return AuditModel.query(f"{tenant}#{entity}", consistent_read=True, limit=limit)


def version_actions(model: Any, event: AuditEvent, when: datetime) -> list[Any]:
    """Update actions recording `event` on a versioned item (users, orders) and moving it to the
    next version; the item's stream turns each version into one chained audit record."""
    return [
        model.prev_event_at.set(model.event_at),
        model.event_at.set(iso(when)),
        model.event_action.set(event.action),
        model.event_actor.set(event.actor),
        model.event_data.set(canonical(event.data)),
        model.version.add(1),
    ]


class PredecessorMissing(Exception):
    """The previous version's audit record is not written yet: retry this one later."""


def version_sk(at: str, version: int) -> str:
    """The sort key of the audit record of an entity's `version` (deterministic: replays are no-ops)."""
    return f"{at}#v{version:010d}"


class AuditStore:
    """Writes the audit records that streams derive from item versions."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def append_user_event(
        self, tenant: str, uid: str, image: Mapping[str, object], old: Mapping[str, object] | None = None
    ) -> bool:
        """The audit record of one version of a user (`image`, the version before it `old`) and,
        in the same transaction, what the version counts: a binding through a share code counts
        the scan and the binding on the share; team sizes follow the change of the upline, and
        the day's bindings, scans and new promoters (`chalicelib.counters.user_version`). The
        record's put fails on a replay, so a replayed version counts nothing."""
        data = json.loads(str(image.get("event_data") or "{}"))
        action = str(image.get("event_action") or "")
        share = data.get("share") if action == "user.bound" else None
        before = old or {}
        version = counters.UserVersion(
            action=action,
            data=data,
            at=parse_iso(str(image["event_at"])),
            upline=tuple(str(x) for x in (image.get("upline") or ())),  # type: ignore[attr-defined]
            previous_upline=tuple(str(x) for x in (before.get("upline") or ())),  # type: ignore[attr-defined]
            promoter=image.get("promoter") is not False,
            was_promoter=bool(before) and before.get("promoter") is not False,
        )
        deltas = counters.user_version(version, stats.timezone(tenant))
        return self.append_version(
            tenant, f"user:{uid}", image, share_code=share if isinstance(share, str) else None, counted=deltas
        )

    def append_version(
        self,
        tenant: str,
        entity: str,
        image: Mapping[str, object],
        *,
        share_code: str | None = None,
        counted: Mapping[tuple[str, str], Mapping[str, int]] | None = None,
    ) -> bool:
        """Write the audit record of one version of an item (from its stream image).

        The record chains to the previous version's record, which must exist; a replay finds
        its record already written and changes nothing (returns False).
        """
        version = int(str(image["version"]))
        at = str(image["event_at"])
        prev_hash = GENESIS
        if version > 1:
            prev_sk = version_sk(str(image.get("prev_event_at")), version - 1)
            try:
                prev_hash = AuditModel.get(f"{tenant}#{entity}", prev_sk, consistent_read=True).hash
            except AuditModel.DoesNotExist:
                raise PredecessorMissing(f"{entity} v{version - 1}") from None
        data = json.loads(str(image.get("event_data") or "{}"))
        action, actor = str(image["event_action"]), str(image["event_actor"])
        event = AuditEvent(entity=entity, action=action, actor=actor, data=data)
        record = build(tenant, event, parse_iso(at), prev_hash, record_id=f"v{version:010d}")

        if not share_code and not counted:
            return put_once(record)  # one conditional put: cheaper than a transaction

        def body(tx: TransactWrite) -> None:
            tx.save(record, condition=AuditModel.pk.does_not_exist())
            if share_code:
                share = ShareModel(f"{tenant}#{share_code}")
                tx.update(share, actions=[ShareModel.scans.add(1), ShareModel.binds.add(1)])
            stats.add(tx, tenant, counted or {})

        outcome = self._tx.run(body)
        if not outcome.committed and not outcome.failed_items:
            raise PredecessorMissing("transaction conflict, retry")
        return outcome.committed


def verify_chain(records: list[AuditModel]) -> bool:
    """True when each record's hash matches its content and links to the one before."""
    prev = GENESIS
    for rec in records:
        event = AuditEvent(entity=rec.entity, action=rec.action, actor=rec.actor, data=json.loads(rec.data))
        if rec.prev_hash != prev or record_hash(rec.tenant, event, rec.at, rec.prev_hash) != rec.hash:
            return False
        prev = rec.hash
    return True


def day_records(tenant: str, day: str) -> list[tuple[str, str]]:
    """(sort key, hash) of every record of `tenant` on UTC `day` (YYYY-MM-DD), in order."""
    found: list[tuple[str, str]] = []
    for shard in range(DAY_SHARDS):
        for rec in AuditModel.by_day.query(f"{tenant}#{day}#{shard}", attributes_to_get=["sk", "hash"]):
            found.append((rec.sk, rec.hash))
    return sorted(found)


def put_once(record: AuditModel) -> bool:
    """Put a record unless one with its key exists; False when it did."""
    return conditional_write(lambda: record.save(condition=AuditModel.pk.does_not_exist()))


def action_record(tenant: str, event: AuditEvent, when: datetime) -> AuditModel:
    """The audit record of an action on an item that is not versioned (operators, merchants,
    products), chained to the entity's newest record, read consistently.

    Callers put it in the same transaction as a change guarded by a condition on the state they
    read (and with `AuditModel.pk.does_not_exist()`), so two writers cannot both chain to the same
    record. Its time is kept after the previous record's, so the chain stays in key order even
    if clocks disagree.
    """
    prev_hash = None
    for rec in AuditModel.query(f"{tenant}#{event.entity}", scan_index_forward=False, limit=1, consistent_read=True):
        prev_hash, when = rec.hash, max(when, parse_iso(rec.at) + timedelta(microseconds=1))
    return build(tenant, event, when, prev_hash)


def latest(tenant: str, entity: str) -> AuditModel | None:
    """The newest record of an entity."""
    for rec in AuditModel.query(f"{tenant}#{entity}", scan_index_forward=False, limit=1):
        return rec
    return None


# --- reading the trail (operators' audit page, verification) ---------------------------------


def entity_page(
    tenant: str, entity: str, start: str, end: str, start_key: dict[str, Any] | None, limit: int
) -> tuple[list[AuditModel], dict[str, Any] | None]:
    """An entity's records with `start <= at < end` (ISO instants), newest first."""
    query = AuditModel.query(
        f"{tenant}#{entity}",
        AuditModel.sk.between(start, end),
        scan_index_forward=False,
        limit=limit,
        last_evaluated_key=start_key,
    )
    rows = [row for row in query if row.at < end]
    return rows, query.last_evaluated_key


def day_page(
    tenant: str, day: str, start: str, end: str, cursor: str | None, limit: int
) -> tuple[list[AuditModel], str | None]:
    """One page of a UTC day's records with `start <= at < end` over its shards, newest first."""

    def read(
        partition: str, start_key: dict[str, Any] | None, room: int
    ) -> tuple[list[tuple[Any, dict[str, Any], AuditModel]], shards.Stop | None]:
        result = AuditModel.by_day.query(
            partition,
            AuditModel.sk.between(start, end),
            scan_index_forward=False,
            limit=room,
            last_evaluated_key=start_key,
        )
        rows = [
            (row.sk, {"day_shard": {"S": partition}, "sk": {"S": row.sk}, "pk": {"S": row.pk}}, row) for row in result
        ]
        stop = result.last_evaluated_key
        return rows, (stop, stop["sk"]["S"]) if stop else None

    return shards.page(f"{tenant}#{day}", read, cursor, limit, reverse=True)


def day_all(tenant: str, day: str) -> list[AuditModel]:
    """Every record of a UTC day (its shards merged by sort key): what a seal covers."""
    found = shards.merged(
        f"{tenant}#{day}", lambda partition: iter(AuditModel.by_day.query(partition)), lambda row: row.sk
    )
    return list(found)


def before(tenant: str, entity: str, sk: str) -> AuditModel | None:
    """The entity's record just before sort key `sk`, if any."""
    for row in AuditModel.query(f"{tenant}#{entity}", AuditModel.sk < sk, scan_index_forward=False, limit=1):
        return row
    return None
