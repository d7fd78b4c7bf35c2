"""Exports of the ledger, orders, withdrawals, the audit trail and promoters, as CSV or XLSX.

An operator (owner, finance, auditor) asks for an export of a kind over days of the tenant's
timezone (at most 366); the request is audited (`export.requested`) and a job message goes on
the jobs queue. The jobs worker writes the file as a stream: rows are read page by page and
sent as numbered parts (S3 multipart in the cloud, part files locally), so memory holds one
part whatever the size. A run stops after `EXPORT_SECONDS_PER_RUN` seconds or
`EXPORT_ROWS_PER_RUN` rows, but only right after a part was saved with the position of its
last row: the next invocation (a new message) starts exactly after that row, so every row is
written once. A lease on the export keeps two invocations from working on it at once.

CSV is UTF-8 with a byte-order mark (Excel then reads Chinese correctly). XLSX is built with
openpyxl's write-only mode, which streams rows to a temporary file: the rows go first to a
staging file of JSON lines (continued across invocations like a CSV), and a last invocation
turns it into the workbook (a new sheet every million rows: Excel's limit is 1,048,576).

Amounts are integer fen, with a yuan column formatted from the integer (no floats); times in
the tenant's timezone. Text that Excel would run as a formula (starting with = + - @) gets a
leading apostrophe.

The file is downloaded from a pre-signed S3 link, or locally from this app at a link signed
with HMAC that expires (`download`).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.auth import require_role
from chalicelib.clock import iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Role
from chalicelib.errors import Ended, InvalidInput, Missing, NotAllowed
from chalicelib.money import format_yuan
from chalicelib.observability import count, logger
from chalicelib.services import audit_trail, tenants
from chalicelib.settings import get_settings
from chalicelib.store import get_store

READERS = (Role.OWNER, Role.FINANCE, Role.AUDITOR)
KINDS = ("ledger", "orders", "withdrawals", "audit", "promoters")
FORMATS = ("csv", "xlsx")
MAX_DAYS = 366
LINK_SECONDS = 3600
LEASE_SECONDS = 900  # the jobs worker's timeout: a lease outlives the invocation that took it
SHEET_ROWS = 1_000_000
BOM = "\ufeff".encode()
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

Row = dict[str, Any]
Column = tuple[str, Callable[[Row, ZoneInfo], Any]]


# --- columns -------------------------------------------------------------------------------------


def _time(name: str) -> Callable[[Row, ZoneInfo], Any]:
    def value(row: Row, zone: ZoneInfo) -> str | None:
        raw = row.get(name)
        if not raw:
            return None
        return datetime.fromisoformat(str(raw)[:27]).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    return value


def _field(name: str) -> Callable[[Row, ZoneInfo], Any]:
    return lambda row, _: _safe(row.get(name))


def _yuan(name: str) -> Callable[[Row, ZoneInfo], Any]:
    return lambda row, _: format_yuan(int(row.get(name) or 0))


def _upline(level: int) -> Callable[[Row, ZoneInfo], Any]:
    return lambda row, _: (row.get("upline") or [None, None, None])[level - 1]


COLUMNS: dict[str, list[Column]] = {
    "ledger": [
        ("时间 (created_at)", _time("created_at")),
        ("推广员 (promoter)", _field("promoter")),
        ("推广员昵称 (promoter_name)", _field("promoter_name")),
        ("订单 (order_id)", _field("order_id")),
        ("级别 (level)", _field("level")),
        ("事件 (event)", _field("event")),
        ("状态 (state)", _field("state")),
        ("佣金/分 (amount_fen)", _field("amount_fen")),
        ("佣金/元 (amount_yuan)", _yuan("amount_fen")),
        ("买家 (buyer)", _field("buyer")),
    ],
    "orders": [
        ("下单时间 (placed_at)", _time("placed_at")),
        ("订单 (order_id)", _field("order_id")),
        ("买家 (buyer)", _field("buyer")),
        ("状态 (status)", _field("status")),
        ("来源 (source)", _field("source")),
        ("原价/分 (list_fen)", _field("list_fen")),
        ("优惠/分 (discount_fen)", _field("discount_fen")),
        ("实付/分 (amount_fen)", _field("amount_fen")),
        ("实付/元 (amount_yuan)", _yuan("amount_fen")),
        ("已退款/分 (refunded_fen)", _field("refunded_fen")),
        ("已退款/元 (refunded_yuan)", _yuan("refunded_fen")),
        ("支付时间 (paid_at)", _time("paid_at")),
        ("分享码 (share_code)", _field("share_code")),
        ("一级 (upline_1)", _upline(1)),
        ("二级 (upline_2)", _upline(2)),
        ("三级 (upline_3)", _upline(3)),
    ],
    "withdrawals": [
        ("申请时间 (created_at)", _time("created_at")),
        ("提现 (withdrawal_id)", _field("id")),
        ("推广员 (promoter)", _field("promoter")),
        ("推广员昵称 (promoter_name)", _field("promoter_name")),
        ("状态 (state)", _field("state")),
        ("金额/分 (amount_fen)", _field("amount_fen")),
        ("金额/元 (amount_yuan)", _yuan("amount_fen")),
        ("手续费/分 (fee_fen)", _field("fee_fen")),
        ("手续费/元 (fee_yuan)", _yuan("fee_fen")),
        ("更新时间 (updated_at)", _time("updated_at")),
    ],
    "audit": [
        ("时间 (at)", _time("at")),
        ("对象 (entity)", _field("entity")),
        ("操作 (action)", _field("action")),
        ("操作人 (actor)", _field("actor")),
        ("内容 (data)", _field("data")),
        ("哈希 (hash)", _field("hash")),
        ("前一哈希 (prev_hash)", _field("prev_hash")),
    ],
    "promoters": [
        ("注册时间 (created_at)", _time("created_at")),
        ("推广员 (uid)", _field("uid")),
        ("昵称 (name)", _field("name")),
        ("一级 (upline_1)", _upline(1)),
        ("二级 (upline_2)", _upline(2)),
        ("三级 (upline_3)", _upline(3)),
        ("绑定时间 (bound_at)", _time("bound_at")),
        ("绑定方式 (bound_via)", _field("bound_via")),
        ("待结算/分 (pending_fen)", _field("pending_fen")),
        ("冻结中/分 (frozen_fen)", _field("frozen_fen")),
        ("可提现/分 (available_fen)", _field("available_fen")),
        ("可提现/元 (available_yuan)", _yuan("available_fen")),
        ("提现中/分 (withdrawing_fen)", _field("withdrawing_fen")),
        ("已提现/分 (paid_fen)", _field("paid_fen")),
        ("已提现/元 (paid_yuan)", _yuan("paid_fen")),
    ],
}


def headers(kind: str) -> list[str]:
    return [name for name, _ in COLUMNS[kind]]


def _safe(value: Any) -> Any:
    """Stored text that Excel (or openpyxl) would take for a formula stays text: a leading
    apostrophe. Only stored values: the yuan columns this module formats are plain numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def values(kind: str, row: Row, zone: ZoneInfo) -> list[Any]:
    return [get(row, zone) for _, get in COLUMNS[kind]]


class CsvRows:
    """Rows as UTF-8 CSV bytes (the first chunk of a file starts with the BOM and the header)."""

    def __init__(self) -> None:
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\r\n")

    def encode(self, cells: list[Any]) -> bytes:
        self._writer.writerow(["" if v is None else v for v in cells])
        data = self._text.getvalue().encode()
        self._text.seek(0)
        self._text.truncate(0)
        return data

    def start(self, kind: str) -> bytes:
        return BOM + self.encode(headers(kind))


class JsonLines:
    """Rows as JSON lines (the staging file of an XLSX: types kept, one row a line)."""

    def encode(self, cells: list[Any]) -> bytes:
        return json.dumps(cells, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def start(self, kind: str) -> bytes:
        return b""


def write_xlsx(kind: str, lines: Iterator[bytes], target: Path) -> int:
    """A workbook at `target` from JSON lines, with openpyxl's write-only mode; returns rows."""
    # function-local: cold start (openpyxl loads only to write a spreadsheet)
    from openpyxl import Workbook  # type: ignore[import-untyped]

    book = Workbook(write_only=True)
    sheet: Any = None
    written = 0
    for line in lines:
        if not line:
            continue
        if written % SHEET_ROWS == 0:
            sheet = book.create_sheet(title=f"{kind}-{written // SHEET_ROWS + 1}")
            sheet.append(headers(kind))
        sheet.append(json.loads(line))
        written += 1
    if sheet is None:
        book.create_sheet(title=f"{kind}-1").append(headers(kind))
    book.save(target)
    return written


# --- requests ------------------------------------------------------------------------------------


def _span(tenant: str, first: str, last: str) -> Any:
    return audit_trail.window(tenant, first, last, MAX_DAYS)


def request(principal: Principal, kind: str, fmt: str, first: str, last: str) -> dict[str, Any]:
    """Queue an export; `{"id", "state": "queued"}`."""
    # function-local: cold start (the exports store loads PynamoDB; the queue sender stays out of import app)
    from chalicelib.store import queue
    from chalicelib.store.exports import Export

    require_role(principal, *READERS)
    if kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}", code="invalid_kind")
    if fmt not in FORMATS:
        raise InvalidInput(f"format is one of {', '.join(FORMATS)}", code="invalid_format")
    _span(principal.tenant, first, last)  # 400 on bad dates, a reversed or too long range
    now = utcnow()
    export_id = f"exp-{now.strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(4)}"
    export = Export(
        tenant=principal.tenant,
        id=export_id,
        kind=kind,
        format=fmt,
        first_day=first,
        last_day=last,
        state="queued",
        actor=principal.actor,
        created_at=iso(now),
        updated_at=iso(now),
    )
    data = {"kind": kind, "format": fmt, "from": first, "to": last}
    event = AuditEvent(entity=f"export:{export_id}", action="export.requested", actor=principal.actor, data=data)
    get_store().exports.create(export, event, now)
    queue.send_batch("jobs", [{"job": "export", "tenant": principal.tenant, "at": iso(now)}])
    count("ExportsRequested")
    return {"id": export_id, "state": "queued"}


def status(principal: Principal, export_id: str) -> dict[str, Any]:
    require_role(principal, *READERS)
    export = get_store().exports.get(principal.tenant, export_id)
    if export is None:
        raise Missing("no such export", code="export_not_found")
    return view(export)


def listing(principal: Principal, cursor: str | None, limit: int) -> dict[str, Any]:
    require_role(principal, *READERS)
    page = get_store().exports.page(principal.tenant, cursor, limit)
    return {"items": [view(e) for e in page.items], "next_cursor": page.next_cursor}


def view(export: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": export.id,
        "kind": export.kind,
        "format": export.format,
        "from": export.first_day,
        "to": export.last_day,
        "state": export.state,
        "rows": export.rows,
        "progress_pct": 100 if export.state == "done" else export.progress,
        "created_at": export.created_at,
        "finished_at": export.finished_at,
    }
    if export.state == "done" and export.file_key:
        body["url"] = link(export)
    if export.state == "failed":
        body["error"] = export.error or "failed"
    return body


def filename(export: Any) -> str:
    return f"{export.kind}-{export.first_day}-{export.last_day}.{export.format}"


# --- download links ------------------------------------------------------------------------------


def _link_key() -> bytes:
    secret = get_settings().jwt_secret.get_secret_value().encode()
    return hmac.new(secret, b"fenxiao export link v1", hashlib.sha256).digest()


def signature(tenant: str, export_id: str, expires: int) -> str:
    message = f"{tenant}\n{export_id}\n{expires}".encode()
    return hmac.new(_link_key(), message, hashlib.sha256).hexdigest()


def link(export: Any, now: float | None = None) -> str:
    """Where the finished file is downloaded: a pre-signed S3 link, or this app's signed route."""
    # function-local: cold start (the export files' client stays out of import app)
    from chalicelib.store.export_files import S3Files, get_files

    files = get_files()
    if isinstance(files, S3Files):
        return files.url(export.file_key, filename(export), LINK_SECONDS)
    expires = int((now if now is not None else time.time()) + LINK_SECONDS)
    base = get_settings().public_base_url.rstrip("/")
    sig = signature(export.tenant, export.id, expires)
    return f"{base}/v1/exports/{export.tenant}/{export.id}/file?expires={expires}&signature={sig}"


@dataclass(frozen=True, slots=True)
class Download:
    body: bytes
    filename: str
    content_type: str


def download(tenant: str, export_id: str, expires: str | None, sig: str | None) -> Download:
    """The file behind a local link: refused unless the signature is this export's and unexpired."""
    # function-local: cold start (the export files' client stays out of import app)
    from chalicelib.store.export_files import DirectoryFiles, get_files

    files = get_files()
    if not isinstance(files, DirectoryFiles):
        raise Missing("exports are downloaded from their pre-signed link", code="export_not_found")
    if not expires or not expires.isdigit() or not sig:
        raise NotAllowed("the link is not valid", code="invalid_link")
    if not hmac.compare_digest(signature(tenant, export_id, int(expires)), sig):
        raise NotAllowed("the link is not valid", code="invalid_link")
    if int(expires) < time.time():
        raise Ended("the link has expired; ask for the export again", code="link_expired")
    export = get_store().exports.get(tenant, export_id)
    if export is None or export.state != "done" or not export.file_key:
        raise Missing("no such export", code="export_not_found")
    return Download(files.read(export.file_key), filename(export), CONTENT_TYPES[export.format])


# --- the run -------------------------------------------------------------------------------------


def run_pending(now: datetime, tenant: str, actor: str) -> dict[str, Any]:
    """The jobs worker's `export` job: go on with the tenant's oldest export nobody works on, for
    one invocation's budget; another message follows while any export is left."""
    # function-local: cold start (the queue sender stays out of import app)
    from chalicelib.store import queue

    store = get_store().exports
    owner = f"{actor}:{secrets.token_hex(6)}"
    clock = time.time()
    summary: dict[str, Any] = {"tenant": tenant, "export": None}
    for export_id, lease_until in store.active(tenant):
        if lease_until >= clock:
            continue  # another invocation has it; it sends the next message itself
        export = store.claim(tenant, export_id, owner, int(clock), int(clock) + LEASE_SECONDS, now)
        if export is None:
            continue
        summary = {"tenant": tenant, "export": export_id, **Run(export, owner).go()}
        break
    if store.active(tenant):
        queue.send_batch("jobs", [{"job": "export", "tenant": tenant, "at": iso(utcnow())}])
    return summary


class LeaseLost(Exception):
    """Another invocation took the export over: stop without writing anything more."""


class Run:
    """One invocation's work on one export (the lease is held)."""

    def __init__(self, export: Any, owner: str) -> None:
        # function-local: cold start (the export files' client stays out of import app)
        from chalicelib.store.export_files import get_files

        settings = get_settings()
        self.export, self.owner = export, owner
        self.store = get_store().exports
        self.files = get_files()
        self.part_bytes = max(settings.export_part_bytes, self.files.min_part)
        self.max_rows = settings.export_rows_per_run
        self.deadline = time.monotonic() + settings.export_seconds_per_run
        self.zone = ZoneInfo(tenants.get(export.tenant).timezone)

    def go(self) -> dict[str, Any]:
        try:
            if self.export.phase == "sheet":
                return self._sheet()
            return self._rows()
        except LeaseLost:
            logger.info("export taken over", extra={"export": self.export.id})
            return {"state": "taken_over"}
        except Exception as exc:  # the operator sees `failed` and its reason, and can ask again
            logger.exception("export failed", extra={"export": self.export.id})
            self._abort()
            self._finish("failed", None, None, f"{type(exc).__name__}: {exc}")
            count("ExportsFailed")
            return {"state": "failed"}

    def _abort(self) -> None:
        e = self.export
        if e.upload_id and e.object_key:
            try:
                self.files.abort(e.object_key, e.upload_id)
            except Exception:  # the bucket's lifecycle rule aborts it in two days anyway
                logger.warning("could not abort an export's upload", extra={"export": e.id})

    def _point(self, **changes: Any) -> Any:
        # function-local: cold start (the exports store loads PynamoDB)
        from chalicelib.store.exports import Checkpoint

        e = self.export
        fields = {
            "rows": e.rows,
            "progress": e.progress,
            "phase": e.phase,
            "cursor": e.cursor,
            "object_key": e.object_key,
            "upload_id": e.upload_id,
            "parts": list(e.parts),
            "size": e.size,
        }
        fields.update(changes)
        return Checkpoint(**fields)

    def _save(self, point: Any) -> None:
        if not self.store.checkpoint(self.export.tenant, self.export.id, self.owner, point, utcnow()):
            raise LeaseLost(self.export.id)
        self.export = replace(
            self.export,
            rows=point.rows,
            progress=point.progress,
            phase=point.phase,
            cursor=point.cursor,
            object_key=point.object_key,
            upload_id=point.upload_id,
            parts=list(point.parts),
            size=point.size,
        )

    def _finish(self, state: str, point: Any, file_key: str | None, error: str | None) -> None:
        e = self.export
        data = {"kind": e.kind, "format": e.format, "rows": point.rows if point else e.rows}
        if error:
            data["error"] = error[:200]
        action = "export.finished" if state == "done" else "export.failed"
        event = AuditEvent(entity=f"export:{e.id}", action=action, actor=e.actor, data=data)
        finished = self.store.finish(
            e, self.owner, state=state, point=point, file_key=file_key, error=error, event=event, when=utcnow()
        )
        if not finished:
            raise LeaseLost(e.id)

    def _rows(self) -> dict[str, Any]:
        """Read the source from the saved position and send parts until the budget is spent."""
        # function-local: cold start (the exports store loads PynamoDB)
        from chalicelib.store.exports import source

        e = self.export
        key = e.object_key or (
            f"exports/{e.tenant}/{e.id}.csv" if e.format == "csv" else f"staging/{e.tenant}/{e.id}.jsonl"
        )
        upload_id = e.upload_id or self.files.start(key)
        encoder: CsvRows | JsonLines = CsvRows() if e.format == "csv" else JsonLines()
        reader = source(e.kind, e.tenant, _span(e.tenant, e.first_day, e.last_day), e.cursor)
        parts, rows, size = list(e.parts), e.rows, e.size
        buffer = bytearray(encoder.start(e.kind) if not parts else b"")
        taken = 0
        share = 100 if e.format == "csv" else 90  # an XLSX's last tenth is building the workbook

        def send() -> None:
            nonlocal size
            number = len(parts) + 1
            parts.append((number, self.files.put_part(key, upload_id, number, bytes(buffer))))
            size += len(buffer)
            buffer.clear()

        for row in reader.rows():
            buffer += encoder.encode(values(e.kind, row, self.zone))
            rows += 1
            taken += 1
            if len(buffer) < self.part_bytes:
                continue
            send()
            progress = min(int(reader.progress() * share), share - 1)
            self._save(
                self._point(
                    rows=rows,
                    progress=progress,
                    cursor=reader.position(),
                    object_key=key,
                    upload_id=upload_id,
                    parts=parts,
                    size=size,
                )
            )
            if taken >= self.max_rows or time.monotonic() >= self.deadline:
                self.store.release(e.tenant, e.id, self.owner)
                return {"state": "running", "rows": rows, "parts": len(parts)}
        if buffer or not parts:
            send()
        self.files.complete(key, upload_id, parts)
        done = self._point(
            rows=rows, progress=share, cursor=None, object_key=key, upload_id=None, parts=parts, size=size
        )
        if e.format == "csv":
            self._finish("done", done, key, None)
            count("ExportsDone")
            return {"state": "done", "rows": rows}
        self._save(replace(done, phase="sheet"))
        self.store.release(e.tenant, e.id, self.owner)
        return {"state": "running", "rows": rows, "phase": "sheet"}

    def _sheet(self) -> dict[str, Any]:
        """Build the workbook from the staging rows (one invocation), upload it, drop the staging."""
        e = self.export
        key = f"exports/{e.tenant}/{e.id}.xlsx"
        with tempfile.TemporaryDirectory(prefix="export-") as folder:
            path = Path(folder) / "book.xlsx"
            written = write_xlsx(e.kind, self.files.read_lines(str(e.object_key)), path)
            upload_id = self.files.start(key)
            parts: list[tuple[int, str]] = []
            with path.open("rb") as handle:
                while chunk := handle.read(self.part_bytes):
                    parts.append((len(parts) + 1, self.files.put_part(key, upload_id, len(parts) + 1, chunk)))
            self.files.complete(key, upload_id, parts)
            size = path.stat().st_size
        staging = str(e.object_key)
        point = self._point(rows=written, progress=100, cursor=None, upload_id=None, parts=parts, size=size)
        self._finish("done", point, key, None)
        self.files.delete(staging)
        count("ExportsDone")
        return {"state": "done", "rows": written}
