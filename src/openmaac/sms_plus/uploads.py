"""Manual upload (the SMS+ help-center tutorial): a CSV or XLSX recipient list (at most 25 MB) for one scenario.

Upload: the file streams to a temporary file and is read, in a child process
(``upload_reading``), by ``openmaac.common.tabular`` (encoding detection, strict CSV, bounded
XLSX, at most MAX_ROWS rows); rows are read one at a time, phone numbers
normalised to E.164 (local numbers in the organisation's region); rows with a bad number are
counted and listed (row number and value), never sent. Answer: imported row count, columns,
a preview of the first two rows. Send: map each of the scenario's parameters to a column;
the rows become SMS+ messages in batches (same path as multicast). Delete: the list goes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext, require_role
from openmaac.common import tabular
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.sms_plus import points, upload_reading
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpMessage, PnpUpload, PnpUploadRow
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.input import NULL_MESSAGE

MAX_BYTES = 25 * 1024 * 1024
MAX_ROWS = 1_000_000
LIMITS = tabular.Limits(max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
# Rows per write transaction while storing: short enough that other organisations' writes
# (SQLite has one writer) wait milliseconds, not the whole file (docs/benchmarks.md, write_latency).
INSERT_CHUNK = 500
DELETE_CHUNK = 5000
STORING = "storing"  # rows still being stored: not found, not sendable
ABANDONED_AFTER_SECONDS = 3600
SEND_CHUNK = 500
INVALID_LISTED = 1000
# Prepared chunks the reading child may have waiting: memory stays flat when the database is slower.
READER_QUEUE_CHUNKS = 4
READER_POLL_SECONDS = 1.0  # how often a wait for the child checks it is still alive
READER_STOPPED = "The file could not be read to the end; upload it again."

logger = logging.getLogger(__name__)


def serialize(upload: PnpUpload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "pnp_setting_id": upload.pnp_setting_id,
        "filename": upload.filename,
        "columns": list(upload.columns),
        "phone_column": upload.phone_column,
        "imported_rows": upload.row_count,
        "invalid_count": upload.invalid_count,
        "invalid_rows": list(upload.invalid_rows),
        "preview": list(upload.preview),
        "status": upload.status,
        "mapping": dict(upload.mapping or {}),
        "sent_count": upload.sent_count,
    }


def get_upload(session: Session, org_id: int, upload_id: int, *, lock: bool = False) -> PnpUpload:
    """A stored list; one still being stored (or left half-stored by a crash) is not found.
    ``lock``: its row locked until the transaction ends (PostgreSQL; SQLite's writes take turns)."""
    statement = select(PnpUpload).where(PnpUpload.organization_id == org_id, PnpUpload.id == upload_id,
                                        PnpUpload.status != STORING)
    upload = session.scalar(statement.with_for_update() if lock else statement)
    if upload is None:
        raise not_found()
    return upload


def receive(org: OrgContext, setting_id: int, filename: str | None, stream: IO[bytes],
            phone_column: str | None) -> dict[str, Any]:
    """Store the list read from ``stream`` (a binary file object: the API's upload, or a file
    the CLI opened); CSV or XLSX is decided by the content (``openmaac.common.tabular``).

    The file is spooled to disk here and read in a child process (``upload_reading``): the
    per-row CPU work (parsing, phone numbers) never holds this process's interpreter lock
    against other requests. Its rows are stored as they arrive, in transactions of
    INSERT_CHUNK rows, so on SQLite other writers (other organisations) get the write lock
    between them; the list is ``storing`` (not found, not sendable) until its last row is in,
    and a failure part-way deletes what was stored. Marketers and admins only (the API acts as admin)."""
    require_role(org, "marketer")
    with get_database().read() as session:
        setting = svc.get_setting(session, org.id, setting_id)
        if setting is None:
            raise not_found()
        sms_on = setting.fallback_enabled
    if "\x00" in (filename or "") or "\x00" in (phone_column or ""):
        raise field_errors({"phone_column" if "\x00" in (phone_column or "") else "file": [NULL_MESSAGE]})
    name = os.path.basename(filename or "upload.csv")
    try:
        with tabular.spooled(stream, LIMITS) as path, _Reader(path, name, phone_column, sms_on, org.region) as reader:
            columns, phone_index = reader.header()
            return _store(org, setting_id, name, columns, phone_index, reader)
    except tabular.TabularError as exc:
        raise field_errors({"file": [str(exc)]}) from None


class _Reader:
    """The child process reading one list (``upload_reading.read_list``) and its queue.

    One child per upload: uploads are rare and long, so a spawn (well under a second) is
    nothing next to the read, and no idle pool is kept. Every wait on the queue is bounded and
    checks the child is alive: a child that dies (killed, out of memory) ends the upload with
    READER_STOPPED, never a hang; leaving early (an error, the client gone) kills the child."""

    def __init__(self, path: str, name: str, phone_column: str | None, sms_on: bool, region: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue(maxsize=READER_QUEUE_CHUNKS)
        self.process = context.Process(
            target=upload_reading.read_list, name="openmaac-upload-reader", daemon=True,
            args=(self.queue, path, name, LIMITS, phone_column, sms_on, region, INSERT_CHUNK, INVALID_LISTED))

    def __enter__(self) -> _Reader:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.process.close()
        self.queue.close()
        self.queue.cancel_join_thread()

    def header(self) -> tuple[list[str], int]:
        message = self.receive()
        if message[0] != "header":
            raise RuntimeError(f"unexpected message from the upload reader: {message[0]}")
        return message[1], message[2]

    def receive(self) -> tuple[Any, ...]:
        """The child's next message; its refusals raised as the API's 400."""
        while True:
            try:
                message: tuple[Any, ...] = self.queue.get(timeout=READER_POLL_SECONDS)
                break
            except queue.Empty:
                if self.process.is_alive():
                    continue
            try:  # what it sent just before it ended is in the pipe already
                message = self.queue.get(timeout=READER_POLL_SECONDS)
                break
            except queue.Empty:
                logger.error("the upload reader ended without an answer (exit code %s)", self.process.exitcode)
                raise field_errors({"file": [READER_STOPPED]}) from None
        if message[0] == "refused":
            raise field_errors(message[1])
        if message[0] == "failed":
            logger.error("the upload reader failed:\n%s", message[1])
            raise field_errors({"file": [READER_STOPPED]})
        return message


def _store(org: OrgContext, setting_id: int, name: str, columns: list[str], phone_index: int,
           reader: _Reader) -> dict[str, Any]:
    database = get_database()
    _sweep_abandoned(org.id)
    now = utcnow()
    with database.write() as session:
        upload = PnpUpload(organization_id=org.id, pnp_setting_id=setting_id, filename=name[:255],
                           columns=columns, phone_column=columns[phone_index], row_count=0, invalid_count=0,
                           invalid_rows=[], preview=[], status=STORING, mapping={}, sent_count=0,
                           created_at=now, updated_at=now)
        session.add(upload)
        session.flush()
        upload_id = upload.id
    try:
        while True:
            message = reader.receive()
            if message[0] != "rows":
                break
            batch = [{"upload_id": upload_id, "row_number": number, "phone_number": phone, "values": values}
                     for number, phone, values in message[1]]
            with database.write() as session:
                session.execute(PnpUploadRow.__table__.insert(), batch)
        if message[0] != "done":
            raise RuntimeError(f"unexpected message from the upload reader: {message[0]}")
        _done, imported, invalid_count, invalid, preview = message
        with database.write() as session:
            stored = session.get(PnpUpload, upload_id)
            if stored is None:  # deleted meanwhile (an abandoned-list sweep cannot reach a fresh one)
                raise not_found()
            stored.row_count = imported
            stored.invalid_count = invalid_count
            stored.invalid_rows = invalid
            stored.preview = preview
            stored.status = "uploaded"
            stored.updated_at = utcnow()
            session.flush()
            return serialize(stored)
    except BaseException:
        _remove(upload_id)
        raise


def _remove(upload_id: int) -> None:
    """Delete a list's rows in short transactions, then the list."""
    database = get_database()
    while True:
        with database.write() as session:
            ids = list(session.scalars(select(PnpUploadRow.id).where(PnpUploadRow.upload_id == upload_id)
                                       .order_by(PnpUploadRow.id).limit(DELETE_CHUNK)))
            if not ids:
                session.execute(delete(PnpUpload).where(PnpUpload.id == upload_id))
                return
            session.execute(delete(PnpUploadRow).where(PnpUploadRow.id.in_(ids)))


def _sweep_abandoned(org_id: int) -> None:
    """Lists left ``storing`` by a process that died part-way: nothing can see or send them;
    their rows go when the organisation next uploads."""
    cutoff = utcnow() - timedelta(seconds=ABANDONED_AFTER_SECONDS)
    with get_database().read() as session:
        abandoned = list(session.scalars(select(PnpUpload.id).where(
            PnpUpload.organization_id == org_id, PnpUpload.status == STORING, PnpUpload.updated_at < cutoff)))
    for upload_id in abandoned:
        _remove(upload_id)


def _mapping(body: dict[str, Any], upload: PnpUpload, names: list[str], key: str) -> dict[str, str]:
    given = (body.get("mapping") or {}).get(key) or {}
    if not isinstance(given, dict):
        raise field_errors({"mapping": {key: ["Expected an object: parameter -> column."]}})
    errors: dict[str, list[str]] = {}
    for name in names:
        column = given.get(name)
        if column is None:
            errors[name] = ["This field is required."]
        elif column not in upload.columns:
            errors[name] = [f'"{column}" is not a column of the list.']
    if errors:
        raise field_errors({"mapping": {key: errors}})
    return {name: str(given[name]) for name in names}


@dataclass
class SendPlan:
    """What sending a list would do: its mapping, event, recipients and the points it may hold."""

    pnp_map: dict[str, str]
    sms_map: dict[str, str]
    event_id: int | None
    recipients: int
    points_needed: int
    balance: int


def plan_send(session: Session, org: OrgContext, upload: PnpUpload, body: dict[str, Any]) -> SendPlan:
    """Check a send of ``upload`` with ``body`` (the API's send body) without sending: the
    scenario is usable, the mapping names a column for every parameter, the event exists; and
    count the points the whole list may hold (its SMS segments; released again for every message
    delivered through LINE). Raises the API's 400s."""
    setting = svc.usable_setting(session, org.id, upload.pnp_setting_id)
    if upload.status != "uploaded":
        raise APIError(400, {"detail": "This list was already sent."})
    if setting.line_push_enabled and not (setting.pnp_enabled or setting.fallback_enabled):
        raise APIError(400, {"detail": "This scenario sends by LINE push only, which needs the push API."})
    if setting.pnp_enabled and setting.pnp_approval_status != "approved":
        raise svc.text_error(svc.NOT_APPROVED)
    pnp_map = _mapping(body, upload, list(setting.parameters or []), "pnp") if setting.pnp_enabled else {}
    sms_map = _mapping(body, upload, list(setting.sms_parameters or []), "sms") if setting.fallback_enabled \
        else {}
    event_id = svc.parse_event_id(session, org.id, body.get("event_id"))
    needed = 0
    if setting.fallback_enabled:
        for values in session.scalars(select(PnpUploadRow.values).where(PnpUploadRow.upload_id == upload.id)
                                      .execution_options(yield_per=2000)):
            needed += _recipient(setting, "+0", values, pnp_map, sms_map).sms_segments
    return SendPlan(pnp_map=pnp_map, sms_map=sms_map, event_id=event_id, recipients=upload.row_count,
                    points_needed=needed, balance=points.balance(session, org.id))


def estimate_send(org: OrgContext, upload_id: int, body: dict[str, Any]) -> SendPlan:
    """The confirmation before a send (the console's): what ``send`` would check and use."""
    require_role(org, "marketer")
    with get_database().read() as session:
        return plan_send(session, org, get_upload(session, org.id, upload_id), body)


def send(org: OrgContext, upload_id: int, body: dict[str, Any]) -> dict[str, Any]:
    require_role(org, "marketer")
    database = get_database()
    with database.read() as session:
        upload = get_upload(session, org.id, upload_id)
        # the points of the whole list are checked before anything is sent
        plan = plan_send(session, org, upload, body)
        if plan.balance < plan.points_needed:
            raise svc.text_error(svc.NO_POINTS)
        pnp_map, sms_map, event_id = plan.pnp_map, plan.sms_map, plan.event_id
    with database.write() as session:
        # locked, so a send of the same list under way is seen (its status) and not started twice
        upload = get_upload(session, org.id, upload_id, lock=True)
        if upload.status != "uploaded":
            raise APIError(400, {"detail": "This list was already sent."})
        upload.status = "sending"
        upload.mapping = {"pnp": pnp_map, "sms": sms_map}
    sent = 0
    last_id = 0
    while True:
        with database.write() as session:
            setting = svc.usable_setting(session, org.id, upload.pnp_setting_id)
            rows = session.execute(select(PnpUploadRow.id, PnpUploadRow.phone_number, PnpUploadRow.values)
                                   .where(PnpUploadRow.upload_id == upload_id, PnpUploadRow.id > last_id)
                                   .order_by(PnpUploadRow.id).limit(SEND_CHUNK)).all()
            if not rows:
                stored = get_upload(session, org.id, upload_id)
                stored.status = "sent"
                stored.sent_count = sent
                stored.updated_at = utcnow()
                break
            recipients = [_recipient(setting, phone, values, pnp_map, sms_map) for _id, phone, values in rows]
            svc.create_messages(session, org.id, setting, recipients, event_id, line_push=False,
                                upload_id=upload_id)
            sent += len(rows)
            last_id = rows[-1][0]
            stored = get_upload(session, org.id, upload_id)
            stored.sent_count = sent
    return {"id": upload_id, "sent": sent, "result": "pending"}


def _recipient(setting: Any, phone: str, values: dict[str, Any], pnp_map: dict[str, str],
               sms_map: dict[str, str]) -> svc.Recipient:
    pnp = {name: str(values.get(column, "")) for name, column in pnp_map.items()}
    sms = {name: str(values.get(column, "")) for name, column in sms_map.items()}
    hashed = bool(svc.SHA256_HEX.match(phone))
    sms_text = None
    segments = 0
    if setting.fallback_enabled and not hashed:
        from openmaac.channels.sms.segments import sms_segments

        sms_text = svc.render_text(setting.sms_text, sms, {svc.JOIN_LINK: "{{join_link}}"})
        segments = sms_segments(svc.render_text(setting.sms_text, sms, {svc.JOIN_LINK: "x" * svc.join_link_length()}))[1]
    return svc.Recipient(phone_number=phone, hashed=hashed, pnp=pnp, sms=sms, line_push=None,
                         line_push_template_id=None, whatsapp=None, customized_id=None, sms_text=sms_text,
                         sms_segments=segments)


def delete_upload(org: OrgContext, upload_id: int) -> None:
    """Delete a list: hidden at once (``storing``), its rows then removed in short transactions.
    Marketers and admins only; messages already sent from it stay."""
    require_role(org, "marketer")
    with get_database().write() as session:
        upload = get_upload(session, org.id, upload_id)
        upload.status = STORING
    _remove(upload_id)


# --- what the console shows of a list ------------------------------------------------------------

LISTED_UPLOADS = 100  # a scenario's lists shown on its page, newest first


def list_uploads(session: Session, org_id: int, setting_id: int) -> list[PnpUpload]:
    """A scenario's stored lists, newest first (at most LISTED_UPLOADS)."""
    return list(session.scalars(select(PnpUpload).where(
        PnpUpload.organization_id == org_id, PnpUpload.pnp_setting_id == setting_id, PnpUpload.status != STORING)
        .order_by(PnpUpload.id.desc()).limit(LISTED_UPLOADS)))


def default_mapping(setting: Any, upload: PnpUpload) -> dict[str, dict[str, str | None]]:
    """A first guess of "Choose Imported List Columns Matching Parameters": each parameter's
    column of the same name (case-insensitive), if the list has one; what was chosen at send
    time for a list already sent."""
    if upload.mapping:
        return {"pnp": dict(upload.mapping.get("pnp") or {}), "sms": dict(upload.mapping.get("sms") or {})}
    by_name = {str(column).casefold(): column for column in upload.columns}
    return {"pnp": {name: by_name.get(name.casefold()) for name in (setting.parameters or [])},
            "sms": {name: by_name.get(name.casefold()) for name in (setting.sms_parameters or [])}}


JOIN_LINK_PREVIEW = "https://…/j/…"


def _fill(node: Any, params: dict[str, str]) -> Any:
    if isinstance(node, str):
        return svc.render_text(node, params, {svc.JOIN_LINK: JOIN_LINK_PREVIEW})
    if isinstance(node, dict):
        return {key: _fill(value, params) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, params) for item in node]
    return node


def filled_contents(setting: Any, row: dict[str, Any] | None, mapping: dict[str, dict[str, str | None]]
                    ) -> dict[str, Any]:
    """The scenario's PNP messages and SMS text filled from ``row`` (a list's first row) through
    ``mapping`` (parameter -> column): the template preview before sending. A parameter with no
    column stays ``{{name}}``."""
    row = row or {}

    def params(kind: str, names: list[str]) -> dict[str, str]:
        chosen = mapping.get(kind) or {}
        filled: dict[str, str] = {}
        for name in names:
            column = chosen.get(name)
            filled[name] = str(row.get(column, "")) if column else "{{" + name + "}}"
        return filled

    return {"pnp_messages": _fill(list(setting.pnp_messages or []), params("pnp", list(setting.parameters or [])))
            if setting.pnp_enabled else [],
            "sms_text": svc.render_text(setting.sms_text or "", params("sms", list(setting.sms_parameters or [])),
                                        {svc.JOIN_LINK: JOIN_LINK_PREVIEW}) if setting.fallback_enabled else None}


@dataclass
class Progress:
    """The delivery of a sent list: messages created so far and where they stand."""

    upload: dict[str, Any]
    messages: int
    finished: int
    line_delivered: int
    sms_delivered: int
    whatsapp_delivered: int
    failed: int

    @property
    def in_progress(self) -> int:
        return self.messages - self.finished

    @property
    def final(self) -> bool:
        """Nothing will change any more: every row became a message and every message ended."""
        return self.upload["status"] == "sent" and self.finished >= self.messages

    @property
    def percent(self) -> int:
        rows = max(int(self.upload["imported_rows"]), 1)
        return min(100, self.finished * 100 // rows)


def progress(session: Session, org_id: int, upload_id: int) -> Progress:
    """One grouped count of the list's messages (the scenario's index, then its upload id)."""
    upload = get_upload(session, org_id, upload_id)
    line = or_(PnpMessage.line_push_status == svc.LINE_PUSH_DELIVERED, PnpMessage.pnp_status == svc.PNP_DELIVERED)
    sms = PnpMessage.sms_status == svc.SMS_DELIVERED
    whatsapp = PnpMessage.whatsapp_status == svc.WHATSAPP_DELIVERED

    def count(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = session.execute(select(
        func.count(), count(PnpMessage.finished.is_(True)), count(line), count(sms), count(whatsapp),
        count(PnpMessage.finished.is_(True) & ~or_(line, sms, whatsapp)),
    ).where(PnpMessage.organization_id == org_id, PnpMessage.pnp_setting_id == upload.pnp_setting_id,
            PnpMessage.upload_id == upload_id)).one()
    return Progress(upload=serialize(upload), messages=int(row[0]), finished=int(row[1]), line_delivered=int(row[2]),
                    sms_delivered=int(row[3]), whatsapp_delivered=int(row[4]), failed=int(row[5]))
