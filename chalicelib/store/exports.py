"""Exports: the export items (state, position, lease) and the reads that feed them.

An export's item keeps everything a run needs to go on in another invocation: the source's
position (JSON), the multipart upload and its parts, rows written. One invocation at a time
works on an export: it takes a lease with a conditional update (free, or expired), and every
checkpoint is conditional on still holding it, so a duplicate queue message cannot write the
same rows twice.

The reads are resumable from a position saved after any row, and page through DynamoDB so
memory stays flat whatever the size:
- audit: the `by_day` index, each UTC day's shards merged by sort key (time order);
- withdrawals: the `by_state` index, every state's shards merged by creation time;
- orders: the `listed` index (the tenant's orders by time of placing, sharded), its shards merged
  by time; each page's orders read whole in batch gets (the index projects what the console's
  list shows, not every column of the export);
- promoters: the `joined` index (the tenant's users by time of joining), each page's users read
  whole in batch gets, non-promoters left out;
- ledger lines: the ledger has no index by tenant and date, so a segmented Scan filtered on
  tenant and date (the cost is the table's size, not the export's: acceptable for a background
  job). Rows come in segment order, not time order.
Orders placed before the `listed` index existed carry no key in it: `python -m devtools.backfill`
sets it.
They live here rather than in each aggregate's module so that only the functions that export
(the API and the jobs worker) are granted Scan on those tables (infra/iam.py reads the store).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pynamodb.exceptions import UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page
from chalicelib.store import audit, shards
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.ledger import accounts
from chalicelib.store.models import (
    AuditModel,
    ExportModel,
    LedgerModel,
    OrderModel,
    UserModel,
    WithdrawalModel,
)
from chalicelib.withdrawal import WithdrawalState

ACTIVE = ("queued", "running")
PAGE = 500  # items per DynamoDB read
SEGMENTS = 16  # scan segments: progress moves by 1/16 of the table


@dataclass(frozen=True, slots=True)
class Export:
    """An export as the service sees it."""

    tenant: str
    id: str
    kind: str
    format: str
    first_day: str
    last_day: str
    state: str
    actor: str
    created_at: str
    updated_at: str
    rows: int = 0
    progress: int = 0
    phase: str = "rows"
    cursor: dict[str, Any] | None = None
    object_key: str | None = None
    upload_id: str | None = None
    parts: list[tuple[int, str]] = field(default_factory=list)
    size: int = 0
    file_key: str | None = None
    error: str | None = None
    finished_at: str | None = None
    runs: int = 0
    lease_owner: str | None = None


def _to_export(item: ExportModel) -> Export:
    return Export(
        tenant=item.tenant,
        id=item.export_id,
        kind=item.kind,
        format=item.format,
        first_day=item.first_day,
        last_day=item.last_day,
        state=item.state,
        actor=item.actor,
        created_at=item.created_at,
        updated_at=item.updated_at,
        rows=int(item.rows or 0),
        progress=int(item.progress or 0),
        phase=item.phase or "rows",
        cursor=json.loads(item.cursor) if item.cursor else None,
        object_key=item.object_key,
        upload_id=item.upload_id,
        parts=[(int(n), str(tag)) for n, tag in json.loads(item.parts or "[]")],
        size=int(item.size or 0),
        file_key=item.file_key,
        error=item.error,
        finished_at=item.finished_at,
        runs=int(item.runs or 0),
        lease_owner=item.lease_owner,
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a run stands after a part: saved only while the run holds the lease."""

    rows: int
    progress: int
    phase: str
    cursor: dict[str, Any] | None
    object_key: str | None
    upload_id: str | None
    parts: list[tuple[int, str]]
    size: int


class ExportStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, export: Export, event: AuditEvent, when: datetime) -> None:
        """The queued export and its `export.requested` audit record, together."""
        item = ExportModel(
            tenant=export.tenant,
            export_id=export.id,
            kind=export.kind,
            format=export.format,
            first_day=export.first_day,
            last_day=export.last_day,
            state="queued",
            actor=export.actor,
            created_at=export.created_at,
            updated_at=export.updated_at,
            active_key=export.tenant,
        )
        record = audit.action_record(export.tenant, event, when)

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=ExportModel.export_id.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        outcome = self._tx.run(body)
        if not outcome.committed:
            raise RuntimeError(f"export {export.id} was not created (conflict)")

    def get(self, tenant: str, export_id: str) -> Export | None:
        try:
            return _to_export(ExportModel.get(tenant, export_id, consistent_read=True))
        except ExportModel.DoesNotExist:
            return None

    def page(self, tenant: str, cursor: str | None, limit: int) -> Page[Export]:
        """A tenant's exports, newest first."""
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        result = ExportModel.query(tenant, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        return Page([_to_export(item) for item in result], encode_cursor(result.last_evaluated_key))

    def active(self, tenant: str, limit: int = 25) -> list[tuple[str, int]]:
        """(id, lease_until) of the tenant's queued and running exports, oldest first."""
        result = ExportModel.active.query(tenant, limit=limit)
        return [(item.export_id, int(item.lease_until or 0)) for item in result]

    def claim(self, tenant: str, export_id: str, owner: str, now: int, until: int, when: datetime) -> Export | None:
        """Take the lease of an active export that nobody holds (or whose holder's time ran out)."""
        item = ExportModel(tenant=tenant, export_id=export_id)
        condition = ExportModel.state.is_in(*ACTIVE) & (
            ExportModel.lease_until.does_not_exist() | (ExportModel.lease_until < now)
        )
        try:
            item.update(
                actions=[
                    ExportModel.lease_owner.set(owner),
                    ExportModel.lease_until.set(until),
                    ExportModel.state.set("running"),
                    ExportModel.runs.add(1),
                    ExportModel.updated_at.set(iso(when)),
                ],
                condition=condition,
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return None
            raise
        return _to_export(item)

    def checkpoint(self, tenant: str, export_id: str, owner: str, point: Checkpoint, when: datetime) -> bool:
        """Save the run's position; False when the lease was lost (another run took over)."""
        item = ExportModel(tenant=tenant, export_id=export_id)
        try:
            item.update(actions=_checkpoint_actions(point, when), condition=ExportModel.lease_owner == owner)
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, tenant: str, export_id: str, owner: str) -> None:
        """Give the lease back (the next message may go on at once)."""
        item = ExportModel(tenant=tenant, export_id=export_id)
        try:
            item.update(actions=[ExportModel.lease_until.set(0)], condition=ExportModel.lease_owner == owner)
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise

    def finish(
        self,
        export: Export,
        owner: str,
        *,
        state: str,
        point: Checkpoint | None,
        file_key: str | None,
        error: str | None,
        event: AuditEvent,
        when: datetime,
    ) -> bool:
        """The export done or failed, with its audit record, in one transaction (lease held)."""
        actions = _checkpoint_actions(point, when) if point is not None else [ExportModel.updated_at.set(iso(when))]
        actions += [
            ExportModel.state.set(state),
            ExportModel.finished_at.set(iso(when)),
            ExportModel.active_key.remove(),
            ExportModel.lease_until.set(0),
        ]
        if file_key is not None:
            actions.append(ExportModel.file_key.set(file_key))
        if error is not None:
            actions.append(ExportModel.error.set(error[:500]))
        record = audit.action_record(export.tenant, event, when)
        item = ExportModel(tenant=export.tenant, export_id=export.id)

        def body(tx: TransactWrite) -> None:
            tx.update(item, actions=actions, condition=ExportModel.lease_owner == owner)
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed


def _checkpoint_actions(point: Checkpoint, when: datetime) -> list[Any]:
    return [
        ExportModel.rows.set(point.rows),
        ExportModel.progress.set(point.progress),
        ExportModel.phase.set(point.phase),
        ExportModel.cursor.set(json.dumps(point.cursor, separators=(",", ":")))
        if point.cursor is not None
        else ExportModel.cursor.remove(),
        ExportModel.object_key.set(point.object_key) if point.object_key else ExportModel.object_key.remove(),
        ExportModel.upload_id.set(point.upload_id) if point.upload_id else ExportModel.upload_id.remove(),
        ExportModel.parts.set(json.dumps(point.parts, separators=(",", ":"))),
        ExportModel.size.set(point.size),
        ExportModel.updated_at.set(iso(when)),
    ]


# --- the sources ---------------------------------------------------------------------------------

Raw = dict[str, Any]  # a DynamoDB item as the low-level API returns it
Row = dict[str, Any]


def _s(item: Raw, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value.get("S") if "S" in value else value.get("N"))


def _n(item: Raw, name: str) -> int:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else 0


class Source:
    """Rows of one export, resumable: `position` after any row starts the next read after it."""

    def __init__(self, position: dict[str, Any] | None) -> None:
        self.state: dict[str, Any] = dict(position or {})

    def rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def position(self) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self.state))  # the reader goes on changing its own
        return copy

    def progress(self) -> float:
        raise NotImplementedError


class MergedIndex(Source):
    """Several index partitions read page by page and merged by their sort key (one position
    per partition: the key of the last row taken from it)."""

    def __init__(
        self,
        position: dict[str, Any] | None,
        *,
        partitions: list[str],
        fetch: Callable[[str, Raw | None], tuple[list[Raw], Raw | None]],
        sort_key: Callable[[Raw], str],
        item_key: Callable[[Raw], Raw],
        convert: Callable[[str, list[Raw]], list[Row | None]],
        start: str,
        end: str,
    ) -> None:
        super().__init__(position)
        self.state.setdefault("p", {})
        self._partitions, self._fetch, self._sort, self._key, self._convert = (
            partitions,
            fetch,
            sort_key,
            item_key,
            convert,
        )
        self._start, self._end = start, end
        self._last = str(self.state.get("t") or start)

    def _read(self, partition: str) -> Iterator[tuple[str, str, Raw, Row]]:
        start = self.state["p"].get(partition)
        while True:
            items, last = self._fetch(partition, start)
            for raw, row in zip(items, self._convert(partition, items), strict=True):
                if row is not None:  # outside the range (the index's `between` includes its end)
                    yield self._sort(raw), partition, self._key(raw), row
            if last is None:
                return
            start = last

    def rows(self) -> Iterator[Row]:
        merged = heapq.merge(*(self._read(p) for p in self._partitions), key=lambda entry: entry[0])
        for sort, partition, key, row in merged:
            self.state["p"][partition] = key
            self.state["t"] = self._last = sort[:27]
            yield row

    def progress(self) -> float:
        return _fraction(self._last, self._start, self._end)


def _fraction(moment: str, start: str, end: str) -> float:
    try:
        done = (parse_iso(moment[:27]) - parse_iso(start)).total_seconds()
        whole = (parse_iso(end) - parse_iso(start)).total_seconds()
    except ValueError:
        return 0.0
    return min(max(done / whole, 0.0), 1.0) if whole > 0 else 1.0


Fetch = Callable[[str, Raw | None], tuple[list[Raw], Raw | None]]  # a partition's page from a start key


def _index_pages(connection: Any, index: str, between: Any) -> Fetch:
    """A reader of one partition of `index`, a page at a time from `start_key`, within `between`."""

    def fetch(partition: str, start_key: Raw | None) -> tuple[list[Raw], Raw | None]:
        data = connection.query(
            partition, range_key_condition=between, index_name=index, limit=PAGE, exclusive_start_key=start_key
        )
        return data.get("Items", []), data.get("LastEvaluatedKey")

    return fetch


class AuditSource(Source):
    """Audit records with `start <= at < end`, UTC day by UTC day, each day's shards merged."""

    def __init__(self, tenant: str, days: tuple[str, ...], start: str, end: str, position: dict[str, Any] | None):
        super().__init__(position)
        self.tenant, self.days, self.start, self.end = tenant, days, start, end
        self.state.setdefault("d", 0)

    def _day(self, day: str, position: dict[str, Any] | None) -> MergedIndex:
        connection = AuditModel._get_connection()

        fetch = _index_pages(connection, "by_day", AuditModel.sk.between(self.start, self.end))

        return MergedIndex(
            position,
            partitions=shards.keys(f"{self.tenant}#{day}"),
            fetch=fetch,
            sort_key=lambda raw: str(_s(raw, "sk")),
            item_key=lambda raw: {k: raw[k] for k in ("pk", "sk", "day_shard")},
            convert=lambda _, items: [_audit_row(raw) if str(_s(raw, "at")) < self.end else None for raw in items],
            start=self.start,
            end=self.end,
        )

    def rows(self) -> Iterator[Row]:
        while self.state["d"] < len(self.days):
            day = self._day(self.days[self.state["d"]], self.state.get("in"))
            for row in day.rows():
                self.state["in"] = day.state
                yield row
            self.state["d"] += 1
            self.state.pop("in", None)

    def progress(self) -> float:
        return min(int(self.state["d"]) / max(len(self.days), 1), 1.0)


def _audit_row(raw: Raw) -> Row:
    return {
        "at": _s(raw, "at"),
        "entity": _s(raw, "entity"),
        "action": _s(raw, "action"),
        "actor": _s(raw, "actor"),
        "data": _s(raw, "data"),
        "hash": _s(raw, "hash"),
        "prev_hash": _s(raw, "prev_hash"),
    }


def withdrawals(tenant: str, start: str, end: str, position: dict[str, Any] | None) -> MergedIndex:
    """Withdrawals created in `[start, end)`, oldest first, over every state and shard."""
    connection = WithdrawalModel._get_connection()
    partitions = [p for state in WithdrawalState for p in shards.keys(f"{tenant}#{state.value}")]

    fetch = _index_pages(connection, "by_state", WithdrawalModel.created_at.between(start, end))

    def convert(partition: str, items: list[Raw]) -> list[Row | None]:
        state = partition.split("#")[1]
        names = _names(tenant, [str(_s(raw, "promoter")) for raw in items])
        return [
            None
            if str(_s(raw, "created_at")) >= end
            else {
                "created_at": _s(raw, "created_at"),
                "id": _s(raw, "withdrawal_id"),
                "promoter": _s(raw, "promoter"),
                "promoter_name": names.get(str(_s(raw, "promoter"))),
                "state": state,
                "amount_fen": _n(raw, "amount_fen"),
                "fee_fen": _n(raw, "fee_fen"),
                "updated_at": _s(raw, "updated_at"),
            }
            for raw in items
        ]

    return MergedIndex(
        position,
        partitions=partitions,
        fetch=fetch,
        sort_key=lambda raw: f"{_s(raw, 'created_at')}#{_s(raw, 'pk')}",
        item_key=lambda raw: {k: raw[k] for k in ("pk", "state_key", "created_at")},
        convert=convert,
        start=start,
        end=end,
    )


class TableScan(Source):
    """One tenant's items of a table with `start <= <date attribute> < end`: a segmented scan,
    segment after segment (position: the segment and the key of the last row taken)."""

    def __init__(
        self,
        position: dict[str, Any] | None,
        *,
        model: Any,
        keys: tuple[str, ...],
        condition: Any,
        convert: Callable[[list[Raw]], list[Row]],
    ) -> None:
        super().__init__(position)
        self.state.setdefault("s", 0)
        self._model, self._keys, self._condition, self._convert = model, keys, condition, convert

    def rows(self) -> Iterator[Row]:
        connection = self._model._get_connection()
        while self.state["s"] < SEGMENTS:
            start = self.state.get("k")
            while True:
                data = connection.scan(
                    filter_condition=self._condition,
                    segment=self.state["s"],
                    total_segments=SEGMENTS,
                    limit=PAGE,
                    exclusive_start_key=start,
                )
                items = data.get("Items", [])
                for raw, row in zip(items, self._convert(items), strict=True):
                    self.state["k"] = {k: raw[k] for k in self._keys}
                    yield row
                start = data.get("LastEvaluatedKey")
                if not start:
                    break
            self.state["s"] += 1
            self.state.pop("k", None)

    def progress(self) -> float:
        return min(int(self.state["s"]) / SEGMENTS, 1.0)


def ledger(tenant: str, start: str, end: str, position: dict[str, Any] | None) -> TableScan:
    """Commission lines created in `[start, end)`."""

    def convert(items: list[Raw]) -> list[Row]:
        names = _names(tenant, [str(_s(raw, "promoter")) for raw in items])
        return [
            {
                "created_at": _s(raw, "created_at"),
                "promoter": _s(raw, "promoter"),
                "promoter_name": names.get(str(_s(raw, "promoter"))),
                "order_id": _s(raw, "order_id"),
                "level": _n(raw, "level"),
                "event": _s(raw, "event"),
                "state": _s(raw, "state"),
                "amount_fen": _n(raw, "amount_fen"),
                "buyer": _s(raw, "buyer"),
            }
            for raw in items
        ]

    condition = (LedgerModel.tenant == tenant) & (LedgerModel.created_at >= start) & (LedgerModel.created_at < end)
    return TableScan(position, model=LedgerModel, keys=("pk", "sk"), condition=condition, convert=convert)


def orders(tenant: str, start: str, end: str, position: dict[str, Any] | None) -> MergedIndex:
    """Orders placed in `[start, end)`, oldest first over every shard of the `listed` index."""
    connection = OrderModel._get_connection()

    fetch = _index_pages(connection, "listed", OrderModel.placed_at.between(start, end))

    def convert(_: str, items: list[Raw]) -> list[Row | None]:
        keys = [str(_s(raw, "pk")) for raw in items if str(_s(raw, "placed_at")) < end]
        whole = _serialized(OrderModel.batch_get(list(dict.fromkeys(keys))))
        return [_order_row(whole[pk]) if (pk := str(_s(raw, "pk"))) in whole else None for raw in items]

    return MergedIndex(
        position,
        partitions=shards.keys(f"{tenant}#orders"),
        fetch=fetch,
        sort_key=lambda raw: f"{_s(raw, 'placed_at')}#{_s(raw, 'pk')}",
        item_key=lambda raw: {k: raw[k] for k in ("pk", "listed_key", "placed_at")},
        convert=convert,
        start=start,
        end=end,
    )


def _order_row(raw: Raw) -> Row:
    attribution = json.loads(_s(raw, "attribution") or "{}")
    upline = list(attribution.get("upline") or [])
    return {
        "placed_at": _s(raw, "placed_at"),
        "order_id": _s(raw, "order_id"),
        "buyer": _s(raw, "buyer"),
        "status": _s(raw, "status"),
        "source": _s(raw, "source"),
        "list_fen": _n(raw, "list_fen"),
        "discount_fen": _n(raw, "discount_fen"),
        "amount_fen": _n(raw, "amount_fen"),
        "refunded_fen": _n(raw, "refunded_fen"),
        "paid_at": _s(raw, "paid_at"),
        "share_code": attribution.get("share_code"),
        "upline": [*upline, None, None, None][:3],
    }


def promoters(tenant: str, start: str, end: str, position: dict[str, Any] | None) -> MergedIndex:
    """Promoters who joined in `[start, end)`, oldest first (the `joined` index), with their
    account balances."""
    connection = UserModel._get_connection()

    fetch = _index_pages(connection, "joined", UserModel.created_at.between(start, end))

    def convert(_: str, items: list[Raw]) -> list[Row | None]:
        wanted = [
            str(_s(raw, "pk"))
            for raw in items
            if str(_s(raw, "created_at")) < end and (raw.get("promoter") or {}).get("BOOL") is not False
        ]
        whole = _serialized(UserModel.batch_get(list(dict.fromkeys(wanted))))
        balances = accounts(tenant, [str(_s(raw, "uid")) for raw in whole.values()])
        return [_promoter_row(whole[pk], balances) if (pk := str(_s(raw, "pk"))) in whole else None for raw in items]

    return MergedIndex(
        position,
        partitions=[tenant],
        fetch=fetch,
        sort_key=lambda raw: f"{_s(raw, 'created_at')}#{_s(raw, 'pk')}",
        item_key=lambda raw: {k: raw[k] for k in ("pk", "tenant", "created_at")},
        convert=convert,
        start=start,
        end=end,
    )


def _promoter_row(raw: Raw, balances: dict[str, dict[str, int]]) -> Row:
    uid = str(_s(raw, "uid"))
    upline = [v.get("S") for v in (raw.get("upline") or {}).get("L", [])]
    return {
        "created_at": _s(raw, "created_at"),
        "uid": uid,
        "name": _s(raw, "name"),
        "upline": [*upline, None, None, None][:3],
        "bound_at": _s(raw, "bound_at"),
        "bound_via": _s(raw, "bound_via"),
        **balances.get(uid, {}),
    }


def _serialized(items: Iterator[Any]) -> dict[str, Raw]:
    """Items of a batch get in DynamoDB's attribute-value form, by hash key."""
    return {item.pk: item.serialize() for item in items}


def _names(tenant: str, uids: list[str]) -> dict[str, str]:
    """Display names of the users of one page (batch get, 100 keys a call)."""
    keys = list(dict.fromkeys(f"{tenant}#{uid}" for uid in uids if uid and uid != "None"))
    return {item.uid: item.name for item in UserModel.batch_get(keys, attributes_to_get=["uid", "name"])}


def source(kind: str, tenant: str, span: Any, position: dict[str, Any] | None) -> Source:
    """The reader of `kind` over `span` (a window: start, end, utc_days) from `position`."""
    if kind == "audit":
        return AuditSource(tenant, span.utc_days, span.start, span.end, position)
    readers: dict[str, Callable[[str, str, str, dict[str, Any] | None], Source]] = {
        "withdrawals": withdrawals,
        "ledger": ledger,
        "orders": orders,
        "promoters": promoters,
    }
    return readers[kind](tenant, span.start, span.end, position)
