"""Bulk contact import (``POST /openapi/v1/member/import/``): validation and set-based upserts.

A request of at most 10,000 rows becomes an ``ImportTask`` (rows stored zlib-compressed) and a
``member.import`` job, in one transaction. The job validates every row first; any row error
fails the whole task with the spec's counters and nothing is written. Otherwise the rows are
applied in ONE write transaction, chunk by chunk, with bulk SELECTs of the existing keys,
executemany UPDATEs, multi-row INSERTs and ``INSERT ... ON CONFLICT`` for tag links, together
with the webhook events and the task's result. A crash rolls it all back and the job runs
again (idempotent: a task already ``done`` is left alone).

Every task ends ``done``. A job that keeps raising (or raises on its data) is given up and the
task is finished with ``success: false`` and a ``reason`` (``on_give_up``, in the transaction
that marks the job failed). The job's lease is short and renewed while it runs, so after a
crash another worker takes the task over within ``JOB_LEASE_SECONDS``; and a task counts as
running only while its job does (see ``running_import``).

The CLI (``openmaac contacts import``) uses the same functions.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import bindparam, func, literal, select, text, update
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.common.phones import to_e164
from openmaac.common.validation import EMAIL_RE
from openmaac.config import get_settings
from openmaac.contacts.import_models import ImportTask
from openmaac.contacts.models import Contact
from openmaac.db.base import UTCDateTime, utcnow
from openmaac.db.engine import get_database
from openmaac.db.locks import lock_for_update
from openmaac.jobs.models import Job
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, PermanentFailure, handler
from openmaac.tags.models import ContactTag
from openmaac.tags.service import get_or_create_tags, schedule_expiry_sweep
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.times import render
from openmaac.webhooks import events

MAX_ROWS = 10_000
MAX_BODY_BYTES = 10 * 1024 * 1024
IMPORT_KEYS = ("line_uid", "customer_id", "email", "mobile")
# Fields a row may carry. The spec lists all but display_name, which openmaac also accepts
# (the contact's MAAC display name, as in PATCH member/).
ROW_FIELDS = ("line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id",
              "gender", "birthday", "tags")
PROFILE_COLUMNS = ("line_display_name", "display_name", "email", "mobile", "customer_id", "gender", "birthday")
EVENT_FIELDS = ("display_name", "customer_id", "email", "mobile", "gender", "birthday")
MAX_LENGTH = {"line_uid": 64, "line_display_name": 255, "display_name": 255, "email": 320,
              "customer_id": 255}
GENDERS = ("male", "female", "unknown")
CHUNK = 10_000  # rows applied per set of statements (one API request's worth)
MISMATCH_LINK_SECONDS = 24 * 3600
RUNNING = ("pending", "processing")
JOB_KIND = "member.import"
# A few attempts for transient database errors (1 s, then 2 s apart); the organisation cannot
# import while they last, and an error in the data itself fails at once (PermanentFailure).
JOB_MAX_ATTEMPTS = 3
# The job's lease, renewed by the worker every third of it while the task runs: a crashed
# worker's task is taken over (and the organisation's next import unblocked) this soon.
JOB_LEASE_SECONDS = 10.0
NULL_CHARACTER = "Null characters are not allowed."
MAX_TAG_LENGTH = 255  # tags.name
# ``reason`` is an openmaac addition to the failed result (the spec's has only counters).
GAVE_UP_REASON = ("The import failed on an unexpected error and was given up; nothing was imported. "
                  "Import the rows again, or contact the operator if it fails again.")
LOST_REASON = "The import's background job was lost; nothing was imported. Import the rows again."
# A contact created by an import has no LINE user yet: it is not reachable on LINE.
CREATED_STATUS = "unfollow"

_TW_LOCAL = re.compile(r"^09\d{8}$")
_TW_E164 = re.compile(r"^\+8869\d{8}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@lru_cache(maxsize=65_536)
def _e164_slow(text: str, region: str) -> str | None:
    return to_e164(text, region)


def normalize_mobile(text: str, region: str) -> str | None:
    """E.164, with a fast path for Taiwanese mobiles (phonenumbers costs ~60 µs a number)."""
    if region == "TW":
        if _TW_E164.match(text):
            return text
        if _TW_LOCAL.match(text):
            return "+886" + text[1:]
    return _e164_slow(text, region)


# -- the request ------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
        type(value), type(value).__name__
    )


def _tag_list_error(value: Any) -> str | None:
    if not isinstance(value, list):
        return f'Expected a list of items but got type "{_type_name(value)}".'
    for item in value:
        if not isinstance(item, str):
            return "Not a valid string."
    return None


def _has_null(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _null_errors(row: dict[str, Any]) -> dict[str, list[str]]:
    """A row's NUL characters, which PostgreSQL cannot store in text (and no contact field needs)."""
    problems: dict[str, list[str]] = {}
    for name, value in row.items():
        if "\x00" in name:  # it would be echoed in the task's useless_fields
            problems["non_field_errors"] = [NULL_CHARACTER]
        if _has_null(value) or (isinstance(value, list) and any(_has_null(item) for item in value)):
            problems[name] = [NULL_CHARACTER]
    return problems


def parse_request(body: bytes) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Check the request's shape (DRF errors, 400); row contents are checked by the task.

    Values the task could not store at all are refused here, nothing accepted: NUL characters
    in any string of a row or in the global tags, and global tags longer than a tag name.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    # JSON can only carry a NUL character escaped: without the escape no string holds one.
    nulls = b"\\u0000" in body
    if not isinstance(document, dict):
        raise field_errors({"non_field_errors": [f"Invalid data. Expected a dictionary, but got {_type_name(document)}."]})
    errors: dict[str, Any] = {}
    key = document.get("import_key")
    if key is None:
        errors["import_key"] = ["This field is required." if "import_key" not in document else "This field may not be null."]
    elif key not in IMPORT_KEYS:
        errors["import_key"] = [f'"{key}" is not a valid choice.']
    data = document.get("data")
    if data is None:
        errors["data"] = ["This field is required." if "data" not in document else "This field may not be null."]
    elif not isinstance(data, list):
        errors["data"] = [f'Expected a list of items but got type "{_type_name(data)}".']
    elif not data:
        errors["data"] = ["This list may not be empty."]
    elif len(data) > MAX_ROWS:
        errors["data"] = [f"Ensure this field has no more than {MAX_ROWS} elements."]
    else:
        row_errors: dict[str, Any] = {}
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                row_errors[str(index)] = {"non_field_errors": [
                    f"Invalid data. Expected a dictionary, but got {_type_name(row)}."]}
            else:
                if nulls and (problems := _null_errors(row)):
                    row_errors[str(index)] = problems
                for value in row.values():  # the common case first: nothing but strings
                    if type(value) is not str:
                        break
                else:
                    if "tags" not in row:
                        continue
                for name, value in row.items():
                    if name == "tags":
                        if value is not None and (problem := _tag_list_error(value)):
                            row_errors.setdefault(str(index), {})["tags"] = [problem]
                    elif isinstance(value, dict | list):
                        row_errors.setdefault(str(index), {})[name] = ["Not a valid string."]
            if len(row_errors) >= 100:
                break
        if row_errors:
            errors["data"] = row_errors
    tags = document.get("tags")
    if tags is not None and (problem := _tag_list_error(tags)):
        errors["tags"] = [problem]
    elif tags is not None and any("\x00" in tag for tag in tags):
        errors["tags"] = [NULL_CHARACTER]
    elif tags is not None and any(len(tag.strip()) > MAX_TAG_LENGTH for tag in tags):
        errors["tags"] = [f"Ensure this field has no more than {MAX_TAG_LENGTH} characters."]
    if errors:
        raise field_errors(errors)
    return str(key), cast(list[dict[str, Any]], data), [t.strip() for t in (tags or []) if t.strip()]


def _job_key(task_id: int) -> str:
    return f"{JOB_KIND}:{task_id}"


def running_import(session: Session, organization_id: int) -> int | None:
    """The organisation's running import, if any: a pending or processing task whose job is
    still waiting or running. A task whose job failed or is gone can never finish; it is
    finished here (``success: false``) rather than blocking the organisation's imports for good
    (tasks left so by a job that raised before ``on_give_up`` existed, or a job deleted by hand)."""
    ids = session.scalars(select(ImportTask.id).where(ImportTask.organization_id == organization_id,
                                                      ImportTask.status.in_(RUNNING))).all()
    if not ids:
        return None
    live = set(session.scalars(select(Job.unique_key).where(Job.unique_key.in_([_job_key(i) for i in ids]),
                                                             Job.status.in_(("ready", "running")))))
    running = None
    for task_id in ids:
        if _job_key(task_id) in live:
            running = running or task_id
        else:
            finish_failed(session, task_id, LOST_REASON)
    return running


def finish_failed(session: Session, task_id: int, reason: str) -> None:
    """End a task that is not done yet as ``done`` with ``success: false`` and ``reason``. The
    counters are there, all 0, so clients reading the spec's failed result find them."""
    now = utcnow()
    result = {"success": False, "blank_error": 0, "miss_fields": [], "gender_error": 0, "mobile_error": 0,
              "birthday_error": 0, "useless_fields": [], "duplicate_error": 0, "email_error": 0,
              "length_error": 0, "reason": reason}
    # Conditional: on PostgreSQL a task finished meanwhile by its job is re-read and left alone.
    session.execute(update(ImportTask).where(ImportTask.id == task_id, ImportTask.status.in_(RUNNING))
                    .values(status="done", result=result, payload=None, finished_at=now, updated_at=now))


def create_task(session: Session, organization_id: int, import_key: str, rows: list[dict[str, Any]],
                tags: list[str]) -> ImportTask:
    """The task and its job, in the caller's transaction. At most one running import per org."""
    lock_for_update(session, "member_import", organization_id)
    if running_import(session, organization_id) is not None:
        raise APIError(
            429,
            {"detail": "Request was throttled: another import task is still running. Expected available in 1 second."},
            headers={"Retry-After": "1"},
        )
    now = utcnow()
    payload = zlib.compress(orjson.dumps({"data": rows, "tags": tags}), 1)
    task = ImportTask(organization_id=organization_id, status="pending", import_key=import_key,
                      row_count=len(rows), payload=payload, created_at=now, updated_at=now)
    session.add(task)
    session.flush()
    enqueue(session, JOB_KIND, {"task_id": task.id}, organization_id=organization_id,
            max_attempts=JOB_MAX_ATTEMPTS, unique_key=_job_key(task.id))
    return task


# -- validation -------------------------------------------------------------------------


@dataclass
class Validation:
    ok: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    failure: dict[str, Any] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    """A scalar as stripped text; None when blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    text = text.strip()
    return text or None


@lru_cache(maxsize=65_536)
def _parse_date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


_PLAIN, _MOBILE, _GENDER, _BIRTHDAY_KIND, _EMAIL, _TAGS = range(6)
_FIELD_KINDS = {"line_uid": _PLAIN, "line_display_name": _PLAIN, "display_name": _PLAIN, "customer_id": _PLAIN,
                "email": _EMAIL, "mobile": _MOBILE, "gender": _GENDER, "birthday": _BIRTHDAY_KIND, "tags": _TAGS}
assert set(_FIELD_KINDS) == set(ROW_FIELDS)


def validate_rows(import_key: str, data: list[dict[str, Any]], region: str) -> Validation:
    """Normalise every row; count errors as the spec's failed result does.

    Each clean row keeps only its non-blank fields (blank fields never overwrite).
    """
    blank = gender = mobile = birthday = duplicate = email = length = 0
    missing: set[str] = set()
    useless: set[str] = set()
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    kinds = _FIELD_KINDS
    for raw in data:
        row: dict[str, Any] = {}
        bad = False
        for name, value in raw.items():
            kind = kinds.get(name)
            if kind is None:
                useless.add(name)
                continue
            if kind == _TAGS:
                names = [t.strip() for t in (value or []) if isinstance(t, str) and t.strip()]
                if any(len(t) > 255 for t in names):
                    length += 1
                    bad = True
                if names:
                    row["tags"] = names
                continue
            text = (value.strip() or None) if type(value) is str else _text(value)
            if text is None:
                continue
            if kind == _PLAIN:
                if len(text) > MAX_LENGTH[name]:
                    length += 1
                    bad = True
                    continue
            elif kind == _MOBILE:
                e164 = normalize_mobile(text, region)
                if e164 is None:
                    mobile += 1
                    bad = True
                    continue
                text = e164
            elif kind == _GENDER:
                if text not in GENDERS:
                    text = text.lower()
                    if text not in GENDERS:
                        gender += 1
                        bad = True
                        continue
            elif kind == _BIRTHDAY_KIND:
                day = _parse_date(text)
                if day is None:
                    birthday += 1
                    bad = True
                else:
                    row[name] = day
                continue
            elif len(text) > 320 or not EMAIL_RE.match(text):  # email
                email += 1
                bad = True
                continue
            row[name] = text
        key_value = row.get(import_key)
        if key_value is None:
            if import_key not in raw:
                missing.add(import_key)
            elif not (import_key == "mobile" and bad):
                blank += 1
        elif key_value in seen:
            duplicate += 1
        else:
            seen.add(key_value)
        rows.append(row)
    if blank or gender or mobile or birthday or duplicate or email or length or missing or useless:
        failure = {
            "success": False,
            "blank_error": blank,
            "miss_fields": sorted(missing),
            "gender_error": gender,
            "mobile_error": mobile,
            "birthday_error": birthday,
            "useless_fields": sorted(useless),
            "duplicate_error": duplicate,
            # openmaac additions: the spec has no counter for these, and they must not pass.
            "email_error": email,
            "length_error": length,
        }
        return Validation(ok=False, failure=failure)
    if import_key != "customer_id":
        # One customer id names one person: when several rows give the same one, the last wins.
        last: dict[str, int] = {}
        for index, row in enumerate(rows):
            if "customer_id" in row:
                last[row["customer_id"]] = index
        for index, row in enumerate(rows):
            if "customer_id" in row and last[row["customer_id"]] != index:
                del row["customer_id"]
    return Validation(ok=True, rows=rows)


def explain_rows(import_key: str, data: list[dict[str, Any]], region: str,
                 labels: list[str]) -> list[tuple[int, list[str]]]:
    """What ``validate_rows`` refuses, row by row and in words (the command line's report; the
    API answers the spec's counters): ``(index, reasons)`` for each refused row, ``labels``
    naming the rows ("line 3") for the duplicates' "as on line 2"."""
    refused: list[tuple[int, list[str]]] = []
    first_of: dict[str, int] = {}
    for index, raw in enumerate(data):
        checked = validate_rows(import_key, [raw], region)
        if checked.ok:
            key_value = checked.rows[0].get(import_key)
            if key_value is not None and key_value in first_of:
                refused.append((index, [f'{import_key}: "{key_value}" appears twice in the file '
                                        f"(as on {labels[first_of[key_value]]})"]))
            elif key_value is not None:
                first_of[key_value] = index
            continue
        refused.append((index, _reasons(import_key, raw, checked.failure)))
    return refused


def _reasons(import_key: str, raw: dict[str, Any], failure: dict[str, Any]) -> list[str]:
    """The failure counters of one row, each with its field and value."""
    def shown(name: str) -> str:
        return f'"{_text(raw.get(name)) or ""}"'

    reasons = [f'"{name}" is not a field of a contact (fields: {", ".join(ROW_FIELDS)})'
               for name in failure["useless_fields"]]
    # an invalid key value also counts as blank; its own reason says why
    if failure["miss_fields"] or (failure["blank_error"] and _text(raw.get(import_key)) is None):
        reasons.append(f"{import_key}: empty, but contacts are matched on it (the import key)")
    if failure["gender_error"]:
        reasons.append(f"gender: {shown('gender')} is not one of {', '.join(GENDERS)}")
    if failure["mobile_error"]:
        reasons.append(f"mobile: {shown('mobile')} is not a valid phone number")
    if failure["birthday_error"]:
        reasons.append(f"birthday: {shown('birthday')} is not a date (YYYY-MM-DD)")
    if failure["email_error"]:
        reasons.append(f"email: {shown('email')} is not a valid email address")
    if failure["length_error"]:
        too_long = [f"{name}: longer than {limit} characters" for name, limit in MAX_LENGTH.items()
                    if _FIELD_KINDS[name] == _PLAIN and len(_text(raw.get(name)) or "") > limit]
        if any(isinstance(t, str) and len(t.strip()) > 255 for t in raw.get("tags") or ()):
            too_long.append("tags: a tag name is longer than 255 characters")
        reasons.extend(too_long)
    return reasons


# -- applying ---------------------------------------------------------------------------


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    mismatched: list[dict[str, Any]] = field(default_factory=list)


_SELECT_COLUMNS = (Contact.id, Contact.line_uid, Contact.status, *[getattr(Contact, c) for c in PROFILE_COLUMNS])


def _is_postgres(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


def _one_of(session: Session, column: str, values: list[Any]) -> Any:
    """``column`` (SQL) is one of ``values``, as ONE bound parameter (``json_each`` on SQLite,
    ``= ANY(array)`` on PostgreSQL): the statement does not grow with the list, SQLAlchemy does
    not render thousands of placeholders, and the column's index is still used."""
    if _is_postgres(session):
        return text(f"{column} = ANY(:keys)").bindparams(keys=list(values))
    return text(f"{column} IN (SELECT value FROM json_each(:keys))").bindparams(keys=orjson.dumps(values).decode())


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as ``UTCDateTime`` stores it on SQLite (naive UTC text)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


_INSERT_CONTACT_COLUMNS = ("organization_id", "line_uid", "status", "created_at", "updated_at", *PROFILE_COLUMNS)
_BIRTHDAY = PROFILE_COLUMNS.index("birthday")
# SQLite: the driver's executemany (SQLAlchemy's per-row parameter processing would cost more
# than SQLite's own work at these volumes); values already in storage form.
_SQLITE_INSERT_CONTACTS = (f"INSERT INTO contacts ({', '.join(_INSERT_CONTACT_COLUMNS)}) "
                           f"VALUES ({', '.join('?' for _ in _INSERT_CONTACT_COLUMNS)})")
_SQLITE_UPDATE_CONTACTS = (f"UPDATE contacts SET {', '.join(f'{c} = ?' for c in PROFILE_COLUMNS)}, updated_at = ? "
                           "WHERE id = ?")
_SQLITE_INSERT_LINKS = ("INSERT INTO contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at, "
                        "expired_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id, tag_id) DO NOTHING")
# PostgreSQL: one statement per chunk over arrays (unnest), one round trip whatever the size.
_PG_PROFILE_TYPES = ("text", "text", "text", "text", "text", "text", "date")
_PG_INSERT_CONTACTS = (
    f"INSERT INTO contacts ({', '.join(_INSERT_CONTACT_COLUMNS)}) "
    f"SELECT %s, NULL, %s, %s, %s, {', '.join(f'v.{c}' for c in PROFILE_COLUMNS)} "
    f"FROM unnest({', '.join(f'%s::{t}[]' for t in _PG_PROFILE_TYPES)}) AS v({', '.join(PROFILE_COLUMNS)}) "
    "RETURNING id, {key}"
)
_PG_UPDATE_CONTACTS = (
    f"UPDATE contacts SET {', '.join(f'{c} = v.{c}' for c in PROFILE_COLUMNS)}, updated_at = %s "
    f"FROM unnest(%s::bigint[], {', '.join(f'%s::{t}[]' for t in _PG_PROFILE_TYPES)}) "
    f"AS v(id, {', '.join(PROFILE_COLUMNS)}) WHERE contacts.id = v.id"
)
_PG_INSERT_LINKS = (
    "INSERT INTO contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at, expired_at) "
    "SELECT v.contact_id, v.tag_id, %s, %s, %s, v.expired_at "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS v(contact_id, tag_id, expired_at) "
    "ON CONFLICT (contact_id, tag_id) DO NOTHING"
)


def apply_rows(session: Session, organization_id: int, import_key: str, rows: list[dict[str, Any]],
               global_tags: list[str]) -> Outcome:
    """Apply validated rows in the caller's (write) transaction. Set-based, chunk by chunk."""
    outcome = Outcome()
    all_tag_names = set(global_tags)
    for row in rows:
        all_tag_names.update(row.get("tags", ()))
    tags = get_or_create_tags(session, organization_id, sorted(all_tag_names)) if all_tag_names else {}
    tag_info = {name: (tag.id, tag.available_days) for name, tag in tags.items()}
    for start in range(0, len(rows), CHUNK):
        _apply_chunk(session, organization_id, import_key, rows[start : start + CHUNK], global_tags,
                     tag_info, outcome)
    return outcome


def _apply_chunk(session: Session, organization_id: int, import_key: str, rows: list[dict[str, Any]],
                 global_tags: list[str], tag_info: dict[str, tuple[int, int | None]], outcome: Outcome) -> None:
    now = utcnow()
    pg = _is_postgres(session)
    keys = [row[import_key] for row in rows]
    existing: dict[str, dict[str, Any]] = {}
    records = session.execute(
        select(*_SELECT_COLUMNS)
        .where(Contact.organization_id == organization_id, _one_of(session, f"contacts.{import_key}", keys))
    ).mappings().all()
    # Several matches: the newest contact wins. (Sorted here: an ORDER BY id lets SQLite pick the
    # (organization_id, id) index and walk the whole organisation instead of the key index.)
    for record in sorted(records, key=lambda r: r["id"]):
        existing[record[import_key]] = dict(record)
    del records

    updates: dict[int, dict[str, Any]] = {}  # contact id -> final values
    changes: list[tuple[int, str, Any, Any]] = []  # (contact id, field, old, new)
    contacts: dict[int, dict[str, Any]] = {}  # contact id -> values, for events
    targets: list[tuple[int, dict[str, Any], bool]] = []  # (contact id, row, created)
    new_source: list[dict[str, Any]] = []
    for row in rows:
        found = existing.get(row[import_key])
        if import_key == "line_uid" and (found is None or found["status"] == "unfollow"):
            outcome.mismatched.append(row)
            continue
        if found is None:
            new_source.append(row)
            continue
        final = {column: found[column] for column in PROFILE_COLUMNS}
        for column in PROFILE_COLUMNS:
            if column in row and row[column] != final[column]:
                final[column] = row[column]
        if "line_display_name" in row and final["display_name"] is None and "display_name" not in row:
            final["display_name"] = row["line_display_name"]
        contact_id = found["id"]
        contacts[contact_id] = {"line_uid": found["line_uid"], **final}
        for column in PROFILE_COLUMNS:
            if final[column] != found[column]:
                updates[contact_id] = final
                if column in EVENT_FIELDS:
                    changes.append((contact_id, column, found[column], final[column]))
        targets.append((contact_id, row, False))
        outcome.updated += 1
    # A new contact's profile: the row's non-blank fields; display_name falls back to line_display_name.
    new_values = [
        (row.get("line_display_name"), row.get("display_name") or row.get("line_display_name"), row.get("email"),
         row.get("mobile"), row.get("customer_id"), row.get("gender"), row.get("birthday"))
        for row in new_source
    ]

    pending_events: list[Any] = []
    # One customer id names one person: whoever held a customer id given here loses it.
    given: dict[str, int | None] = {new: cid for cid, column, _old, new in changes
                                    if column == "customer_id" and new is not None}
    if import_key != "customer_id":
        # (With customer_id as the key, a new row's id was just looked up: nobody holds it.)
        given.update({values[4]: None for values in new_values if values[4] is not None})
    if given:
        holders = session.execute(
            select(Contact.id, Contact.line_uid, Contact.customer_id)
            .where(Contact.organization_id == organization_id, _one_of(session, "contacts.customer_id", list(given)))
        ).all()
        unbind: list[dict[str, Any]] = []
        for holder_id, line_uid, customer_id in holders:
            if customer_id is not None and given.get(customer_id) == holder_id:
                continue
            if holder_id in updates or holder_id in contacts:
                final = updates.get(holder_id) or {k: contacts[holder_id][k] for k in PROFILE_COLUMNS}
                if final["customer_id"] == customer_id:
                    final["customer_id"] = None
                    updates[holder_id] = {k: final[k] for k in PROFILE_COLUMNS}
                    contacts[holder_id]["customer_id"] = None
                    changes.append((holder_id, "customer_id", customer_id, None))
                continue
            unbind.append({"v_id": holder_id})
            pending_events.append(events.profile_event(line_uid=line_uid, customer_id=None, field="customer_id",
                                                       old=customer_id, new=None))
        if unbind:
            table = Contact.__table__
            session.execute(
                update(table).where(table.c.id == bindparam("v_id")).values(customer_id=None, updated_at=now),
                unbind,
            )

    if updates:
        _update_contacts(session, pg, updates, now)
    for contact_id, column, old, new in changes:
        info = contacts[contact_id]
        pending_events.append(events.profile_event(line_uid=info["line_uid"], customer_id=info["customer_id"],
                                                   field=column, old=old, new=new))
    if pending_events:
        # contact.profile.<field>.update, batched: the same rows contact_profile_updated writes.
        events.emit_many(session, organization_id, pending_events)

    created_customer: dict[int, str | None] = {}
    if new_source:
        new_ids = _insert_contacts(session, pg, organization_id, import_key, new_source, new_values, now)
        for contact_id, row, values in zip(new_ids, new_source, new_values, strict=True):
            created_customer[contact_id] = values[4]
            targets.append((contact_id, row, True))
        outcome.created += len(new_source)

    if tag_info and targets:
        def who(contact_id: int) -> tuple[str | None, str | None]:
            if contact_id in created_customer:
                return None, created_customer[contact_id]
            info = contacts[contact_id]
            return info["line_uid"], info["customer_id"]

        _apply_tags(session, pg, organization_id, targets, global_tags, tag_info, who, now)


def _update_contacts(session: Session, pg: bool, updates: dict[int, dict[str, Any]], now: datetime) -> None:
    connection = session.connection()
    if pg:
        columns: list[list[Any]] = [list(updates)]
        columns += [[final[c] for final in updates.values()] for c in PROFILE_COLUMNS]
        connection.exec_driver_sql(_PG_UPDATE_CONTACTS, (now, *columns))
        return
    stamp = _sqlite_time(now)
    rows = []
    for contact_id, final in updates.items():
        values = [final[c] for c in PROFILE_COLUMNS]
        values[_BIRTHDAY] = _sqlite_date(values[_BIRTHDAY])
        rows.append((*values, stamp, contact_id))
    connection.exec_driver_sql(_SQLITE_UPDATE_CONTACTS, rows)  # type: ignore[arg-type]


def _insert_contacts(session: Session, pg: bool, organization_id: int, import_key: str,
                     source: list[dict[str, Any]], values: list[tuple[Any, ...]], now: datetime) -> list[int]:
    """Insert the new contacts; their ids, in the order of ``source``."""
    connection = session.connection()
    if pg:
        # Each new row's key is distinct (validated), so RETURNING the key maps ids back exactly.
        columns = [list(column) for column in zip(*values, strict=True)]
        returned = connection.exec_driver_sql(
            _PG_INSERT_CONTACTS.replace("{key}", import_key),
            (organization_id, CREATED_STATUS, now, now, *columns),
        ).all()
        ids = {key: contact_id for contact_id, key in returned}
        return [ids[row[import_key]] for row in source]
    # SQLite: this transaction holds the database's write lock (BEGIN IMMEDIATE), so the rows
    # past the highest id are exactly these, numbered in insertion order.
    floor = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM contacts").scalar() or 0
    stamp = _sqlite_time(now)
    days: dict[date | None, str | None] = {None: None}  # many rows share a birthday: format each once
    rows = []
    for v in values:
        day = v[_BIRTHDAY]
        text_day = days.get(day)
        if text_day is None and day is not None:
            text_day = days[day] = day.isoformat()
        rows.append((organization_id, None, CREATED_STATUS, stamp, stamp, *v[:_BIRTHDAY], text_day))
    connection.exec_driver_sql(_SQLITE_INSERT_CONTACTS, rows)  # type: ignore[arg-type]
    count, top = connection.exec_driver_sql("SELECT count(*), max(id) FROM contacts WHERE id > ?", (floor,)).one()
    if count == len(source) and top == floor + count:
        # Each insert took max(id) + 1: the ids are floor + 1 ... floor + n, in insertion order.
        return list(range(floor + 1, floor + count + 1))
    # Never expected (ids near 2**63 are chosen at random): read them back by their distinct keys.
    by_key: dict[Any, int] = dict(session.execute(
        select(getattr(Contact, import_key), Contact.id).where(
            Contact.organization_id == organization_id, Contact.id > floor,
            _one_of(session, f"contacts.{import_key}", [row[import_key] for row in source]))
    ).all())
    return [by_key[row[import_key]] for row in source]


def _apply_tags(session: Session, pg: bool, organization_id: int, targets: list[tuple[int, dict[str, Any], bool]],
                global_tags: list[str], tag_info: dict[str, tuple[int, int | None]],
                who: Any, now: datetime) -> None:
    wanted: dict[tuple[int, int], str] = {}
    global_ids = [(tag_info[name][0], name) for name in global_tags]
    for contact_id, row, _created in targets:
        for tag_id, name in global_ids:
            wanted[(contact_id, tag_id)] = name
        names = row.get("tags")
        if names:
            for name in names:
                wanted[(contact_id, tag_info[name][0])] = name
    if not wanted:
        return
    old_ids = [cid for cid, _row, created in targets if not created]
    present: dict[tuple[int, int], datetime | None] = {}
    if old_ids:
        tag_ids = sorted({tid for tid, _days in tag_info.values()})
        for contact_id, tag_id, expired_at in session.execute(
            select(ContactTag.contact_id, ContactTag.tag_id, ContactTag.expired_at)
            .where(_one_of(session, "contact_tags.contact_id", old_ids), ContactTag.tag_id.in_(tag_ids))
        ):
            present[(contact_id, tag_id)] = expired_at
    expiry = {name: now + timedelta(days=days) if days else None for name, (_tid, days) in tag_info.items()}
    inserts: list[tuple[int, int, datetime | None]] = []
    renew: list[dict[str, Any]] = []
    expiries: set[datetime] = set()
    for (contact_id, tag_id), name in wanted.items():
        expired_at = expiry[name]
        if expired_at is not None:
            expiries.add(expired_at)
        if (contact_id, tag_id) not in present:
            inserts.append((contact_id, tag_id, expired_at))
            continue
        old_expiry = present[(contact_id, tag_id)]
        lapsed = old_expiry is not None and old_expiry <= now
        if old_expiry is None and expired_at is None:
            continue  # a permanent tag already on: nothing changes
        renew.append({"k_contact": contact_id, "k_tag": tag_id, "k_expired": expired_at, "k_created": now,
                      "k_lapsed": lapsed})
    if inserts:
        connection = session.connection()
        if pg:
            connection.exec_driver_sql(_PG_INSERT_LINKS, (
                organization_id, now, now, [i[0] for i in inserts], [i[1] for i in inserts],
                [i[2] for i in inserts]))
        else:
            stamp = _sqlite_time(now)
            stored = {name: _sqlite_time(e) for name, e in expiry.items()}
            by_time = {e: stored[name] for name, e in expiry.items()}
            connection.exec_driver_sql(_SQLITE_INSERT_LINKS, [  # type: ignore[arg-type]
                (contact_id, tag_id, organization_id, stamp, stamp, by_time[expired_at])
                for contact_id, tag_id, expired_at in inserts])
    if renew:
        table = ContactTag.__table__
        stmt = (
            update(table)
            .where(table.c.contact_id == bindparam("k_contact"), table.c.tag_id == bindparam("k_tag"))
            .values(expired_at=bindparam("k_expired"), created_at=bindparam("k_created"))
        )
        active_rows = [r for r in renew if not r["k_lapsed"]]
        if active_rows:
            session.execute(stmt, active_rows)
        lapsed_rows = [r for r in renew if r["k_lapsed"]]
        if lapsed_rows:
            session.execute(
                update(table)
                .where(table.c.contact_id == bindparam("k_contact"), table.c.tag_id == bindparam("k_tag"))
                .values(expired_at=bindparam("k_expired"), created_at=bindparam("k_created"),
                        tagged_at=bindparam("k_created")),
                lapsed_rows,
            )
    for expired_at in sorted({e.replace(second=0, microsecond=0) for e in expiries}):
        schedule_expiry_sweep(session, organization_id, expired_at)
    # contact.tag.add, batched (the rows contact_tag_added writes). As the webhooks entry point
    # documents (CDH OpenAPI 2.0.1), it fires for every tagging, also when the contact had the tag.
    # A generator: nothing is built when the organisation has no webhook endpoint.
    events.emit_many(session, organization_id, (
        events.tag_event("contact.tag.add", line_uid=line_uid, customer_id=customer_id, tag_id=tag_id, tag_name=name)
        for (contact_id, tag_id), name in wanted.items()
        for line_uid, customer_id in (who(contact_id),)
    ))


# -- the task ---------------------------------------------------------------------------

MISMATCH_COLUMNS = ("line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id",
                    "gender", "birthday", "tags")


def mismatch_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(MISMATCH_COLUMNS)
    for row in rows:
        writer.writerow([
            ",".join(row.get("tags", ())) if column == "tags"
            else (row[column].isoformat() if column == "birthday" and column in row else row.get(column, ""))
            for column in MISMATCH_COLUMNS
        ])
    return ("\ufeff" + out.getvalue()).encode()


def run_task(task_id: int) -> None:
    """Process one import task (the job handler; the CLI calls it too). Idempotent."""
    database = get_database()
    with database.write() as session:
        now = utcnow()
        # Conditional, so a second run (a lease taken over while the first still finishes) never
        # turns a task the first finished meanwhile back into processing.
        started = session.execute(
            update(ImportTask).where(ImportTask.id == task_id, ImportTask.status.in_(RUNNING))
            .values(status="processing", started_at=func.coalesce(ImportTask.started_at, literal(now, UTCDateTime())), updated_at=now)
            .returning(ImportTask.organization_id, ImportTask.import_key, ImportTask.payload)
        ).first()
        if started is None:
            return
        organization_id, import_key, payload = started
        region = _region(session, organization_id)
    document = orjson.loads(zlib.decompress(payload or b"x\x9c\x03\x00\x00\x00\x00\x01"))
    data = document.get("data", [])
    global_tags = document.get("tags", [])
    checked = validate_rows(import_key, data, region)
    del document, data
    with database.write() as session:
        task = session.get(ImportTask, task_id, with_for_update=True)
        if task is None or task.status == "done":
            return
        if not checked.ok:
            result = checked.failure
            csv_bytes = None
        else:
            outcome = apply_rows(session, organization_id, import_key, checked.rows, global_tags)
            result = {
                "tags": global_tags,
                "success": True,
                "total_num": len(checked.rows),
                "created_num": outcome.created,
                "updated_num": outcome.updated,
                "mismatch_num": len(outcome.mismatched),
            }
            csv_bytes = zlib.compress(mismatch_csv(outcome.mismatched)) if import_key == "line_uid" else None
        now = utcnow()
        task.status = "done"
        task.result = result
        task.mismatch_csv = csv_bytes
        task.payload = None
        task.finished_at = now
        task.updated_at = now


def _region(session: Session, organization_id: int) -> str:
    from openmaac.auth.models import Organization

    return session.scalar(select(Organization.region).where(Organization.id == organization_id)) or "TW"


def _give_up_import(session: Session, payload: dict[str, Any], _context: JobContext, _error: str) -> None:
    # The job's error stays in the job (and the log) for the operator; it may name internals.
    finish_failed(session, int(payload["task_id"]), GAVE_UP_REASON)


@handler(JOB_KIND, lease_seconds=JOB_LEASE_SECONDS, renew_lease=True, on_give_up=_give_up_import)
def run_import_job(payload: dict[str, Any], _context: JobContext) -> None:
    try:
        run_task(int(payload["task_id"]))
    except (OverflowError, ValueError, DataError) as exc:
        # A value the database or a date cannot hold: every attempt would fail the same way.
        raise PermanentFailure(f"{type(exc).__name__}: {exc}") from exc


# -- reading a task ---------------------------------------------------------------------


def _signature(task_id: int, expires: int) -> str:
    key = get_settings().secret_key.encode()
    return hmac.new(key, f"import-mismatch:{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def mismatch_link(task_id: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + MISMATCH_LINK_SECONDS)
    base = get_settings().public_base_url.rstrip("/")
    return (f"{base}/openapi/v1/member/import/{task_id}/mismatch/"
            f"?expires={expires}&signature={_signature(task_id, expires)}")


def check_mismatch_signature(task_id: int, expires: int, signature: str) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(signature, _signature(task_id, expires))


def task_view(session: Session, org: OrgContext, task_id: int) -> dict[str, Any]:
    task = session.scalar(
        select(ImportTask).where(ImportTask.id == task_id, ImportTask.organization_id == org.id)
    )
    if task is None:
        raise not_found()
    view: dict[str, Any] = {"category": "import_member", "status": task.status}
    if task.status == "done" and task.result is not None:
        result = dict(task.result)
        if result.get("success"):
            result["start_time"] = render(task.started_at, org.tz)
            result["end_time"] = render(task.finished_at, org.tz)
            result["mismatch_export_link"] = mismatch_link(task.id) if task.import_key == "line_uid" else None
        view["result"] = result
    view["created_at"] = render(task.created_at, org.tz)
    view["updated_at"] = render(task.updated_at, org.tz)
    return view


def mismatch_file(session: Session, task_id: int) -> bytes | None:
    data = session.scalar(select(ImportTask.mismatch_csv).where(ImportTask.id == task_id))
    return zlib.decompress(data) if data else None


__all__ = ["apply_rows", "create_task", "parse_request", "run_task", "task_view", "validate_rows"]
