"""Member import and export tasks (``/cdh/v1/member/import``, ``/member/export``, ``/task/{id}``).

Both run as durable jobs. At most MAX_CONCURRENT_IMPORTS imports per organisation are
pending or processing at once (the next is 409), and one export. A task not finished within
TASK_TIMEOUT of its creation fails: it is marked so when anyone looks (a new request, the
task's view) and its job stops between chunks. An export's CSV can be downloaded through
its signed link for EXPORT_LINK_VALIDITY after it finished.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.cdh import clock
from openmaac.cdh.models import CdhTask, ChannelIdentity
from openmaac.cdh.schemas import PROFILE_COLUMNS, UpdateMemberData
from openmaac.cdh.service import clean_custom_fields, custom_field_types, detail, iso
from openmaac.common.phones import to_e164
from openmaac.config import get_settings
from openmaac.contacts.models import Contact
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.db.locks import lock_for_update
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, handler
from openmaac.webhooks.events import emit_many, profile_event

MAX_CONCURRENT_IMPORTS = 10
TASK_TIMEOUT = timedelta(hours=3)
EXPORT_LINK_VALIDITY = timedelta(days=7)
CHUNK = 500
RUNNING = ("pending", "processing")
IMPORT_KIND = "cdh.import_member"
EXPORT_KIND = "cdh.export_member"
TIMEOUT_REASON = "timeout"
EXPORT_COLUMNS = (
    "source", "member_id", "line_uid", "channel_type", "external_member_id", "customer_id", "connect_id",
    "full_name", "display_name", "display_email", "display_mobile", "gender", "birthday", "region", "city",
    "address", "company", "member_level", "account_manager",
)
KEY_COLUMNS = {"line_uid": "line_uid", "display_email": "email", "display_mobile": "mobile",
               "connect_id": "connect_id", "customer_id": "customer_id"}


class ImportRow(UpdateMemberData):
    """One row: the import key's value and the fields to write (unknown fields: the row is skipped)."""

    line_uid: str | None = None


_ROWS = TypeAdapter(list[ImportRow])


def _dump(row: Any) -> bytes:
    """One row as one line of JSON: orjson, or the standard library for what orjson refuses
    (integers past 64 bits, lone surrogates; such rows then fail validation as errors)."""
    try:
        return orjson.dumps(row)
    except orjson.JSONEncodeError:
        return json.dumps(row).encode()


def _load(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def view(task: CdhTask) -> dict[str, Any]:
    result = dict(task.result or {})
    if task.category == "export_member" and task.status == "success" and task.expires_at is not None:
        result["download_url"] = download_link(task.id, task.expires_at)
        result["expires_at"] = iso(task.expires_at)
    return {"id": task.id, "category": task.category, "status": task.status, "result": result,
            "updated_at": iso(task.updated_at), "created_at": iso(task.created_at)}


def expire_overdue(session: Session, organization_id: int) -> None:
    """Fail the organisation's tasks still pending or processing past their deadline."""
    now = clock.now()
    session.execute(update(CdhTask).where(CdhTask.organization_id == organization_id, CdhTask.status.in_(RUNNING),
                                          CdhTask.deadline <= now)
                    .values(status="failed", result={"reason": TIMEOUT_REASON}, payload=None, updated_at=now))


def _running(session: Session, organization_id: int, category: str) -> int:
    return len(session.scalars(select(CdhTask.id).where(
        CdhTask.organization_id == organization_id, CdhTask.category == category,
        CdhTask.status.in_(RUNNING))).all())


def create_import(session: Session, org: OrgContext, import_key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    lock_for_update(session, "cdh_import", org.id)
    expire_overdue(session, org.id)
    if _running(session, org.id, "import_member") >= MAX_CONCURRENT_IMPORTS:
        raise detail(409, f"Too many concurrent import tasks: at most {MAX_CONCURRENT_IMPORTS} per organization")
    now = clock.now()
    task = CdhTask(organization_id=org.id, category="import_member", status="pending", import_key=import_key,
                   row_count=len(rows), payload=zlib.compress(b"\n".join(_dump(row) for row in rows), 1), result={},
                   deadline=now + TASK_TIMEOUT, created_at=now, updated_at=now)
    session.add(task)
    session.flush()
    enqueue(session, IMPORT_KIND, {"task_id": task.id}, organization_id=org.id, max_attempts=5,
            unique_key=f"{IMPORT_KIND}:{task.id}")
    return view(task)


def create_export(session: Session, org: OrgContext) -> dict[str, Any]:
    lock_for_update(session, "cdh_export", org.id)
    expire_overdue(session, org.id)
    if _running(session, org.id, "export_member"):
        raise detail(409, "An export task is already running")
    now = clock.now()
    task = CdhTask(organization_id=org.id, category="export_member", status="pending", row_count=0, result={},
                   deadline=now + TASK_TIMEOUT, created_at=now, updated_at=now)
    session.add(task)
    session.flush()
    enqueue(session, EXPORT_KIND, {"task_id": task.id}, organization_id=org.id, max_attempts=5,
            unique_key=f"{EXPORT_KIND}:{task.id}")
    return view(task)


def get_task(database: Any, org: OrgContext, task_id: int) -> dict[str, Any]:
    """The task, read without taking the writer; a running task past its deadline is failed
    first (in a write transaction of its own)."""
    def read() -> CdhTask | None:
        with database.read() as session:
            task = session.scalar(select(CdhTask).where(CdhTask.id == task_id, CdhTask.organization_id == org.id))
            if task is not None:
                session.expunge(task)
            return task

    task = read()
    if task is None:
        raise detail(404, "Task not found")
    if task.status in RUNNING and task.deadline <= clock.now():
        with database.write() as session:
            expire_overdue(session, org.id)
        task = read()
        assert task is not None
    return view(task)


# -- running an import ------------------------------------------------------------------------

def _start(session: Session, task_id: int) -> CdhTask | None:
    """Mark the task processing; None when it is finished (or failed) already."""
    task = session.scalar(select(CdhTask).where(CdhTask.id == task_id).with_for_update())
    if task is None or task.status not in RUNNING:
        return None
    now = clock.now()
    if task.deadline <= now:
        _fail(task, TIMEOUT_REASON)
        return None
    task.status = "processing"
    task.updated_at = now
    return task


def _fail(task: CdhTask, reason: str) -> None:
    task.status = "failed"
    task.result = {**(task.result or {}), "reason": reason}
    task.payload = None
    task.updated_at = clock.now()


def _key_value(import_key: str, row: ImportRow, raw: dict[str, Any], region: str) -> Any:
    if import_key == "line_uid":
        value = raw.get("line_uid")
        return value if isinstance(value, str) and value else None
    value = getattr(row, import_key)
    if import_key == "display_mobile" and value:
        return to_e164(value, region) or value
    return value or None


def run_import(task_id: int) -> None:
    """Process one import task chunk by chunk, each chunk its own transaction; stops (failed)
    once the task's deadline passes. Idempotent: rows already applied write nothing new."""
    database = get_database()
    with database.write() as session:
        task = _start(session, task_id)
        if task is None:
            return
        organization_id, import_key, payload = task.organization_id, str(task.import_key), task.payload
        from openmaac.auth.models import Organization

        region = session.scalar(select(Organization.region).where(Organization.id == organization_id)) or "TW"
        types = custom_field_types(session, organization_id)
    # one JSON row a line, parsed a chunk at a time: ten concurrent 10,000-row imports never
    # hold all their rows as Python objects at once
    lines = zlib.decompress(payload).split(b"\n") if payload else []
    del payload
    counts = {"total_count": len(lines), "success_count": 0, "skipped_count": 0, "error_count": 0}
    column = KEY_COLUMNS[import_key]
    for start in range(0, len(lines), CHUNK):
        with database.write() as session:
            if clock.now() >= session.scalar(select(CdhTask.deadline).where(CdhTask.id == task_id)):  # type: ignore[operator]
                task = session.scalar(select(CdhTask).where(CdhTask.id == task_id).with_for_update())
                if task is not None and task.status in RUNNING:
                    task.result = counts
                    _fail(task, TIMEOUT_REASON)
                return
            _apply_chunk(session, organization_id, import_key, column,
                         [_load(line) for line in lines[start:start + CHUNK]], region, types, counts)
    with database.write() as session:
        task = session.scalar(select(CdhTask).where(CdhTask.id == task_id).with_for_update())
        if task is not None and task.status in RUNNING:
            task.status = "success"
            task.result = counts
            task.payload = None
            task.updated_at = clock.now()


def _apply_chunk(session: Session, organization_id: int, import_key: str, column: str, raw_rows: list[Any],
                 region: str, types: dict[str, tuple[str, bool]], counts: dict[str, int]) -> None:
    parsed: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []  # (key value, profile, custom)
    try:  # the whole chunk at once; row by row only when some row is invalid
        checked: list[ImportRow | None] = list(_ROWS.validate_python(raw_rows))
    except ValidationError:
        checked = []
        for raw in raw_rows:
            try:
                checked.append(ImportRow.model_validate(raw))
            except ValidationError:
                checked.append(None)
    for raw, row in zip(raw_rows, checked, strict=True):
        if row is None:
            counts["error_count"] += 1
            continue
        key = _key_value(import_key, row, raw, region)
        custom, errors = clean_custom_fields(types, row.custom_fields or {}, [])
        if key is None or errors:
            counts["error_count"] += 1
            continue
        profile = {name: value for name, value in row.changes().items() if name != "line_uid"}
        parsed.append((key, profile, custom))
    if not parsed:
        return
    keys = list({key for key, _, _ in parsed})
    apply_rows(session, organization_id, column, keys, parsed, counts)


# The contacts columns an import may write, by CDH field name.
WRITABLE = {name: PROFILE_COLUMNS[name] for name in PROFILE_COLUMNS}
_COLUMNS = tuple(dict.fromkeys(WRITABLE.values()))


def apply_rows(session: Session, organization_id: int, column: str, keys: list[Any],
               parsed: list[tuple[Any, dict[str, Any], dict[str, Any]]], counts: dict[str, int]) -> None:
    """Set-based: read the matched contacts' columns once, work out each one's final values,
    write the changed ones with one executemany UPDATE, queue contact.profile.<field>.update
    for each changed field. One customer_id stays with one contact (the last row giving it)."""
    table = Contact.__table__
    selected = [table.c.id, table.c.line_uid, table.c.custom_fields, *(table.c[c] for c in _COLUMNS)]
    matched: dict[Any, list[dict[str, Any]]] = {}
    by_id: dict[int, dict[str, Any]] = {}
    # No ORDER BY id: SQLite would walk the organisation by its (organization_id, id) index
    # instead of looking the keys up (sorted here, so several matches apply in id order)
    records = session.execute(select(*selected).where(table.c.organization_id == organization_id,
                                                      table.c[column].in_(keys))).mappings().all()
    for record in sorted(records, key=lambda r: r["id"]):
        row = dict(record)
        matched.setdefault(row[column], []).append(row)
        by_id[row["id"]] = row
    original = {contact_id: dict(row) for contact_id, row in by_id.items()}
    touched: set[int] = set()
    given_customer: dict[str, int] = {}
    for key, profile, custom in parsed:
        targets = matched.get(key)
        if not targets:
            counts["skipped_count"] += 1
            continue
        for row in targets:
            for name, value in profile.items():
                field = WRITABLE[name]
                if row[field] != value:
                    row[field] = value
                    touched.add(row["id"])
                if field == "customer_id" and value is not None:
                    holder = given_customer.get(value)
                    if holder is not None and holder != row["id"] and by_id[holder]["customer_id"] == value:
                        by_id[holder]["customer_id"] = None
                        touched.add(holder)
                    given_customer[value] = row["id"]
            if custom:
                values = dict(row["custom_fields"] or {})
                for custom_key, value in custom.items():
                    if value is None:
                        values.pop(custom_key, None)
                    else:
                        values[custom_key] = value
                values_or_none = values or None
                if values_or_none != row["custom_fields"]:
                    row["custom_fields"] = values_or_none
                    touched.add(row["id"])
        counts["success_count"] += 1
    now = utcnow()
    pending: list[Any] = []
    if given_customer:
        # whoever else held a customer id given here loses it (a change of theirs too)
        for holder_id, line_uid, customer_id in session.execute(
            select(table.c.id, table.c.line_uid, table.c.customer_id).where(
                table.c.organization_id == organization_id, table.c.customer_id.in_(list(given_customer)))
        ).all():
            if holder_id in by_id:
                continue
            session.execute(update(table).where(table.c.id == holder_id).values(customer_id=None, updated_at=now))
            pending.append(profile_event(line_uid=line_uid, customer_id=None, field="customer_id",
                                         old=customer_id, new=None))
    if not touched:
        if pending:
            emit_many(session, organization_id, pending)
        return
    updates = [{"_id": contact_id, "_updated_at": now, "_custom_fields": by_id[contact_id]["custom_fields"],
                **{f"_{field}": by_id[contact_id][field] for field in _COLUMNS}} for contact_id in touched]
    statement = update(table).where(table.c.id == bindparam("_id")).values(
        updated_at=bindparam("_updated_at"), custom_fields=bindparam("_custom_fields"),
        **{field: bindparam(f"_{field}") for field in _COLUMNS})
    session.execute(statement, updates)

    def changes() -> Iterator[Any]:  # built only when an endpoint listens (emit_many looks first)
        yield from pending
        for contact_id in touched:
            row, before = by_id[contact_id], original[contact_id]
            for field in _COLUMNS:
                if row[field] != before[field]:
                    yield profile_event(line_uid=row["line_uid"], customer_id=row["customer_id"], field=field,
                                        old=before[field], new=row[field])

    emit_many(session, organization_id, changes())


def _give_up(session: Session, payload: dict[str, Any], _context: JobContext, _error: str) -> None:
    task = session.scalar(select(CdhTask).where(CdhTask.id == int(payload["task_id"])).with_for_update())
    if task is not None and task.status in RUNNING:
        _fail(task, "error")


@handler(IMPORT_KIND, lease_seconds=60.0, renew_lease=True, on_give_up=_give_up)
def run_import_job(payload: dict[str, Any], _context: JobContext) -> None:
    run_import(int(payload["task_id"]))


# -- running an export ----------------------------------------------------------------------

def export_rows(session: Session, organization_id: int) -> Any:
    """CSV rows: one per channel-level member; a contact known by no channel identity is one
    row, its LINE user id as the LINE member."""
    columns = [Contact.id, Contact.line_uid, *(getattr(Contact, PROFILE_COLUMNS[name]) for name in EXPORT_COLUMNS[5:]),
               ChannelIdentity.channel_type, ChannelIdentity.external_member_id]
    stmt = (select(*columns).outerjoin(ChannelIdentity, ChannelIdentity.contact_id == Contact.id)
            .where(Contact.organization_id == organization_id).order_by(Contact.id, ChannelIdentity.id)
            .execution_options(yield_per=2000))
    for row in session.execute(stmt):
        contact_id, line_uid, *profile, channel_type, external_member_id = row
        if channel_type is None:
            channel_type, external_member_id = ("line", line_uid) if line_uid else ("", "")
        yield ["maac", contact_id, line_uid or "", channel_type, external_member_id or "",
               *("" if value is None else (value.isoformat() if hasattr(value, "isoformat") else value)
                 for value in profile)]


def run_export(task_id: int) -> None:
    database = get_database()
    with database.write() as session:
        task = _start(session, task_id)
        if task is None:
            return
        organization_id = task.organization_id
    compressor = zlib.compressobj(6)
    parts: list[bytes] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    with database.read() as session:
        for row in export_rows(session, organization_id):
            writer.writerow(row)
            count += 1
            if buffer.tell() > 1 << 20:
                parts.append(compressor.compress(buffer.getvalue().encode()))
                buffer.seek(0)
                buffer.truncate()
    parts.append(compressor.compress(buffer.getvalue().encode()))
    parts.append(compressor.flush())
    with database.write() as session:
        task = session.scalar(select(CdhTask).where(CdhTask.id == task_id).with_for_update())
        if task is None or task.status not in RUNNING:
            return
        now = clock.now()
        if now >= task.deadline:
            _fail(task, TIMEOUT_REASON)
            return
        task.file = b"".join(parts)
        task.row_count = count
        task.status = "success"
        task.result = {"row_count": count}
        task.expires_at = now + EXPORT_LINK_VALIDITY
        task.updated_at = now


@handler(EXPORT_KIND, lease_seconds=120.0, renew_lease=True, on_give_up=_give_up)
def run_export_job(payload: dict[str, Any], _context: JobContext) -> None:
    run_export(int(payload["task_id"]))


def _signature(task_id: int, expires: int) -> str:
    key = get_settings().secret_key.encode()
    return hmac.new(key, f"cdh-export:{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def download_link(task_id: int, expires_at: datetime) -> str:
    expires = int(expires_at.timestamp())
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/cdh/v1/task/{task_id}/download?expires={expires}&signature={_signature(task_id, expires)}"


def download(session: Session, task_id: int, expires: int, signature: str) -> Iterator[bytes]:
    """The export's CSV, decompressed piece by piece, for a valid, unexpired link (404
    otherwise; 410 once expired)."""
    if not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), _signature(task_id, expires).encode()):
        raise detail(404, "Not Found")
    row = session.execute(select(CdhTask.expires_at, CdhTask.file).where(
        CdhTask.id == task_id, CdhTask.category == "export_member", CdhTask.status == "success")).first()
    if row is None or row[0] is None or row[1] is None:
        raise detail(404, "Not Found")
    if clock.now() >= row[0]:
        raise detail(410, "The download link has expired")
    return _decompressed(row[1])


def _decompressed(blob: bytes, piece: int = 1 << 20) -> Iterator[bytes]:
    """The CSV in pieces of at most ``piece`` bytes: a large export is never whole in memory."""
    decompressor = zlib.decompressobj()
    for start in range(0, len(blob), piece // 8):
        data = decompressor.decompress(blob[start:start + piece // 8], piece)
        while data:
            yield data
            data = decompressor.decompress(decompressor.unconsumed_tail, piece)
    rest = decompressor.flush()
    if rest:
        yield rest


__all__ = ["create_export", "create_import", "download", "get_task", "run_export", "run_import"]
