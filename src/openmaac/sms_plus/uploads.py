"""Manual upload (file 002): a CSV or XLSX recipient list (at most 25 MB) for one scenario.

Upload: the file streams to a temporary file; rows are read one at a time, phone numbers
normalised to E.164 (local numbers in the organisation's region); rows with a bad number are
counted and listed (row number and value), never sent. Answer: imported row count, columns,
a preview of the first two rows. Send: map each of the scenario's parameters to a column;
the rows become SMS+ messages in batches (same path as multicast). Delete: the list goes.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.common.phones import to_e164
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.sms_plus import points
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpUpload, PnpUploadRow
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.input import NULL_MESSAGE

MAX_BYTES = 25 * 1024 * 1024
PHONE_COLUMNS = ("phone_number", "phone", "mobile", "電話", "手機", "手機號碼", "電話號碼")
INSERT_CHUNK = 2000
SEND_CHUNK = 500
INVALID_LISTED = 1000


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


def get_upload(session: Session, org_id: int, upload_id: int) -> PnpUpload:
    upload = session.scalar(select(PnpUpload).where(PnpUpload.organization_id == org_id, PnpUpload.id == upload_id))
    if upload is None:
        raise not_found()
    return upload


def _rows(path: str, is_xlsx: bool) -> Iterator[list[str]]:
    """The file's rows; a cell holding a null character (which PostgreSQL cannot store)
    refuses the file, also half-way through (the write transaction is rolled back)."""
    for row in _raw_rows(path, is_xlsx):
        if any("\x00" in cell for cell in row):
            raise field_errors({"file": [NULL_MESSAGE]})
        yield row


def _raw_rows(path: str, is_xlsx: bool) -> Iterator[list[str]]:
    if is_xlsx:
        from openpyxl import load_workbook

        # a file object, not the path: openpyxl refuses a path without an .xlsx suffix (the temp file)
        with open(path, "rb") as handle:
            workbook = load_workbook(handle, read_only=True, data_only=True)
            try:
                for row in workbook.worksheets[0].iter_rows(values_only=True):
                    yield ["" if value is None else (str(int(value)) if isinstance(value, float)
                                                     and value.is_integer() else str(value)) for value in row]
            finally:
                workbook.close()
        return
    with open(path, "rb") as raw:
        head = raw.read(3)
    encoding = "utf-8-sig" if head == b"\xef\xbb\xbf" else "utf-8"
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        yield from csv.reader(handle)


def receive(org: OrgContext, setting_id: int, filename: str | None, stream: IO[bytes],
            phone_column: str | None) -> dict[str, Any]:
    """Store the list read from ``stream`` (a binary file object: the API's upload, or a file
    the CLI opened); ``filename`` decides CSV vs XLSX only together with the content."""
    with get_database().read() as session:
        setting = svc.get_setting(session, org.id, setting_id)
        if setting is None:
            raise not_found()
        sms_on = setting.fallback_enabled
    if "\x00" in (filename or "") or "\x00" in (phone_column or ""):
        raise field_errors({"phone_column" if "\x00" in (phone_column or "") else "file": [NULL_MESSAGE]})
    name = os.path.basename(filename or "upload.csv")
    fd, path = tempfile.mkstemp(prefix="openmaac-pnp-upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1024 * 1024):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise field_errors({"file": ["The file is larger than 25 MB."]})
                out.write(chunk)
        with open(path, "rb") as raw:
            is_xlsx = raw.read(4) == b"PK\x03\x04"
        if not is_xlsx and not name.lower().endswith((".csv", ".txt")) and name.lower().endswith(".xlsx"):
            raise field_errors({"file": ["The file is not a valid XLSX file."]})
        try:
            rows = _rows(path, is_xlsx)
            header = next(rows, None)
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
            raise field_errors({"file": ["The file is not a valid CSV or XLSX file."]}) from exc
        if not header or not any(cell.strip() for cell in header):
            raise field_errors({"file": ["The file has no header row."]})
        columns = [cell.strip() for cell in header]
        if phone_column:
            if phone_column not in columns:
                raise field_errors({"phone_column": [f'"{phone_column}" is not a column of the file.']})
            phone_index = columns.index(phone_column)
        else:
            lowered = [column.lower() for column in columns]
            phone_index = next((lowered.index(c) for c in PHONE_COLUMNS if c in lowered), -1)
            if phone_index < 0:
                raise field_errors({"file": ["The file has no phone column (phone_number, phone or mobile); "
                                             "name it with phone_column."]})
        now = utcnow()
        with get_database().write() as session:
            upload = PnpUpload(organization_id=org.id, pnp_setting_id=setting_id, filename=name[:255],
                               columns=columns, phone_column=columns[phone_index], row_count=0, invalid_count=0,
                               invalid_rows=[], preview=[], status="uploaded", mapping={}, sent_count=0,
                               created_at=now, updated_at=now)
            session.add(upload)
            session.flush()
            upload_id = upload.id
            batch: list[dict[str, Any]] = []
            invalid: list[dict[str, Any]] = []
            invalid_count = imported = 0
            preview: list[dict[str, Any]] = []
            for number, row in enumerate(rows, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                values = {column: (row[i].strip() if i < len(row) else "") for i, column in enumerate(columns)}
                raw_phone = values[columns[phone_index]]
                phone = None
                if svc.SHA256_HEX.match(raw_phone) and not sms_on:
                    phone = raw_phone
                elif raw_phone:
                    phone = to_e164(raw_phone, org.region)
                if phone is None:
                    invalid_count += 1
                    if len(invalid) < INVALID_LISTED:
                        invalid.append({"row": number, "phone_number": raw_phone})
                    continue
                imported += 1
                if len(preview) < 2:
                    preview.append(values)
                batch.append({"upload_id": upload_id, "row_number": number, "phone_number": phone, "values": values})
                if len(batch) >= INSERT_CHUNK:
                    session.execute(PnpUploadRow.__table__.insert(), batch)
                    batch = []
            if batch:
                session.execute(PnpUploadRow.__table__.insert(), batch)
            upload.row_count = imported
            upload.invalid_count = invalid_count
            upload.invalid_rows = invalid
            upload.preview = preview
            session.flush()
            return serialize(upload)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


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


def send(org: OrgContext, upload_id: int, body: dict[str, Any]) -> dict[str, Any]:
    database = get_database()
    with database.read() as session:
        upload = get_upload(session, org.id, upload_id)
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
        # the points of the whole list are checked before anything is sent
        needed = 0
        if setting.fallback_enabled:
            for values in session.scalars(select(PnpUploadRow.values).where(PnpUploadRow.upload_id == upload_id)
                                          .execution_options(yield_per=2000)):
                needed += _recipient(setting, "+0", values, pnp_map, sms_map).sms_segments
            if points.balance(session, org.id) < needed:
                raise svc.text_error(svc.NO_POINTS)
    with database.write() as session:
        upload = get_upload(session, org.id, upload_id)
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


def delete_upload(session: Session, org_id: int, upload_id: int) -> None:
    upload = get_upload(session, org_id, upload_id)
    session.execute(delete(PnpUploadRow).where(PnpUploadRow.upload_id == upload.id))
    session.delete(upload)

