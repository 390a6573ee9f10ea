"""Contacts: listing, profile updates, and the follow/unfollow lifecycle from LINE."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, and_, bindparam, func, or_, select, type_coerce, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import NullType

from openmaac.auth.service import OrgContext
from openmaac.common.phones import to_e164
from openmaac.common.validation import MSG_DATE, MSG_EMAIL, MSG_PHONE, choice_error, is_email, parse_iso_date
from openmaac.contacts.models import CONTACT_STATUSES, GENDERS, Contact
from openmaac.db.base import utcnow
from openmaac.tags.models import ContactTag, Tag
from openmaac.web.errors import field_errors, not_found
from openmaac.web.pagination import PAGE_SIZE, encode_token, position_after
from openmaac.web.times import end_of_day, render, start_of_day
from openmaac.webhooks.events import emit_many, profile_event

PROFILE_FIELDS = ("display_name", "customer_id", "email", "mobile", "gender", "birthday")


@dataclass
class ContactFilters:
    member_id: int | None = None
    line_uid: str | None = None
    email: str | None = None
    mobile: str | None = None
    customer_id: str | None = None
    status: str | None = None
    updated_at_min: date | None = None
    updated_at_max: date | None = None
    all_tag: int = 0


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


def active_tag_condition(now: datetime | None = None) -> Any:
    """A tag link counts while it has no expiry or its expiry is in the future."""
    now = now or utcnow()
    return or_(ContactTag.expired_at.is_(None), ContactTag.expired_at > now)


def tags_for(session: Session, contact_ids: list[int], *, tagged_from: datetime | None = None,
             tagged_before: datetime | None = None) -> dict[int, list[tuple[str, datetime]]]:
    """Active tags of many contacts in one query: {contact_id: [(name, tagged_at), ...]}."""
    result: dict[int, list[tuple[str, datetime]]] = {cid: [] for cid in contact_ids}
    if not contact_ids:
        return result
    stmt = (
        select(ContactTag.contact_id, Tag.name, ContactTag.tagged_at)
        .join(Tag, Tag.id == ContactTag.tag_id)
        .where(ContactTag.contact_id.in_(contact_ids), active_tag_condition())
        .order_by(ContactTag.contact_id, ContactTag.tagged_at, Tag.id)
    )
    if tagged_from is not None:
        stmt = stmt.where(ContactTag.tagged_at >= tagged_from)
    if tagged_before is not None:
        stmt = stmt.where(ContactTag.tagged_at < tagged_before)
    for contact_id, name, tagged_at in session.execute(stmt):
        result[contact_id].append((name, tagged_at))
    return result


def page_renderer(tz: ZoneInfo) -> Callable[[datetime | None], str | None]:
    """``render`` for one page: the same instant (a bulk import's tagging time, a contact's
    equal created_at/updated_at) is converted to the organisation's zone only once."""
    rendered: dict[datetime, str | None] = {}

    def render_once(value: datetime | None) -> str | None:
        if value is None:
            return None
        text = rendered.get(value)
        if text is None:
            text = rendered[value] = render(value, tz)
        return text

    return render_once


def serialize(contact: Any, tags: list[tuple[str, datetime]], org: OrgContext,
              render_time: Callable[[datetime | None], str | None] | None = None) -> dict[str, Any]:
    """A contact (a ``Contact`` or a row of its columns) as the member API shows it."""
    if render_time is None:
        render_time = page_renderer(org.tz)
    return {
        "line_uid": contact.line_uid,
        "line_display_name": contact.line_display_name,
        "display_name": contact.display_name,
        "email": contact.email,
        "mobile": contact.mobile,
        "customer_id": contact.customer_id,
        "gender": contact.gender,
        "birthday": contact.birthday.isoformat() if contact.birthday else None,
        "tags": [name for name, _ in tags],
        "tags_detail": [{"name": name, "tagged_at": render_time(at)} for name, at in tags],
        "status": contact.status,
        "updated_at": render_time(contact.updated_at),
        "created_at": render_time(contact.created_at),
        "blocked_at": render_time(contact.blocked_at),
    }


def normalize_mobile_query(raw: str, region: str) -> str:
    """A ``+`` sent unencoded arrives as a space; restore it, then normalise like stored numbers."""
    text = raw.strip()
    if raw.startswith(" ") and text[:1].isdigit():
        text = "+" + text
    return to_e164(text, region) or text


# -- the member list (GET member/): one prebuilt statement a filter shape, plain rows ------------
#
# A page is 300 contacts with their tags: read as one statement (the page of contacts, its
# tags joined on), its columns taken as the driver returns them (no per-value type
# processing), and its times converted to the organisation's zone once per distinct value and
# left as datetimes for orjson to render (byte for byte what ``isoformat`` gives, in a
# fraction of the time).

_CONTACTS = Contact.__table__
_LINKS = ContactTag.__table__
_TAGS = Tag.__table__
_SHOWN = ("line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id", "gender", "birthday",
          "status", "updated_at", "created_at", "blocked_at")
_TIMES = ("updated_at", "created_at", "blocked_at")
# filter -> the column it matches exactly
_FILTER_COLUMNS = {"member_id": "id", "line_uid": "line_uid", "email": "email", "mobile": "mobile",
                   "customer_id": "customer_id", "status": "status"}


def _as_stored(column: Any, name: str | None = None) -> Any:
    """``column`` as the database driver returns it, with no per-value type processing."""
    return type_coerce(column, NullType()).label(name or column.name)


def _utc_text(column: Any, dialect: str) -> Any:
    """A time column as naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``: SQLite's stored form,
    and PostgreSQL's ``to_char`` of it (whatever the session's DateStyle and TimeZone), which
    Python parses in a quarter of the time psycopg's timestamptz loader takes."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:MI:SS.US").label(column.name)
    return _as_stored(column)


@lru_cache(maxsize=128)
def _member_page_statement(dialect: str, filters: tuple[str, ...], below: bool, window: tuple[bool, bool],
                           tag_window: tuple[bool, bool]) -> Any:
    """The page's statement for one shape of request (which filters, a start, which window
    bounds): built once, its values bound at execution. Rows: the contact's id and shown
    columns, then one of its active tags (name, tagged_at) or two NULLs; newest contact first,
    each contact's tags in the order they were put on."""
    contacts = _CONTACTS.c
    page = select(contacts.id, *(_utc_text(contacts[name], dialect) if name in _TIMES else _as_stored(contacts[name])
                                 for name in _SHOWN)).where(
        contacts.organization_id == bindparam("organization_id"))
    for name in filters:
        page = page.where(contacts[_FILTER_COLUMNS[name]] == bindparam(name))
    if below:
        page = page.where(contacts.id < bindparam("below_id"))
    if window[0]:
        page = page.where(contacts.updated_at >= bindparam("window_from"))
    if window[1]:
        page = page.where(contacts.updated_at < bindparam("window_to"))
    rows = page.order_by(contacts.id.desc()).limit(PAGE_SIZE + 1).subquery("page")
    links = _LINKS.c
    tagged = and_(links.contact_id == rows.c.id,
                  or_(links.expired_at.is_(None), links.expired_at > bindparam("now")))
    if tag_window[0]:
        tagged = and_(tagged, links.tagged_at >= bindparam("tagged_from"))
    if tag_window[1]:
        tagged = and_(tagged, links.tagged_at < bindparam("tagged_before"))
    statement = (
        select(*rows.c, _as_stored(_TAGS.c.name, "tag_name"), _utc_text(links.tagged_at, dialect),
               _TAGS.c.id.label("tag_id"))
        .select_from(rows.outerjoin(_LINKS, tagged).outerjoin(_TAGS, _TAGS.c.id == links.tag_id))
        .order_by(rows.c.id.desc(), links.tagged_at, _TAGS.c.id)
    )
    if dialect != "sqlite":
        return statement
    # SQLite: the page's rows as ONE row, a JSON array of the rows' arrays in their order.
    # Python's sqlite3 lets the interpreter lock go and takes it back for every row it steps
    # through; with a few hundred rows a page and the other request threads wanting the lock,
    # those hand-overs cost more than the page's own work (8 threads in one process: 223-283
    # pages/s row by row, 586-616 as one row; docs/benchmarks.md, 2026-12-05)
    ordered = statement.subquery("ordered")
    return select(func.json_group_array(func.json_array(*ordered.c)))


def _local_times(stored_times: set[Any], tz: ZoneInfo) -> dict[Any, datetime | None]:
    """Each distinct time of a page (naive UTC text, see ``_utc_text``) -> an aware datetime in
    ``tz`` (None -> None), for the page's rows to look up."""
    local: dict[Any, datetime | None] = {None: None}
    for stored in stored_times:
        if stored is None:
            continue
        if isinstance(stored, str):
            try:
                # "+00:00" parsed rather than .replace(tzinfo=UTC): a third of the cost
                utc = datetime.fromisoformat(stored + "+00:00")
            except ValueError:  # a form fromisoformat does not read: SQLAlchemy's SQLite parser
                utc = _SQLITE_DATETIME(stored).replace(tzinfo=UTC)
        else:
            utc = stored if stored.tzinfo is not None else stored.replace(tzinfo=UTC)
        local[stored] = utc.astimezone(tz)
    return local


_SQLITE_DATETIME = cast(Callable[[str], datetime], sqlite.DATETIME().result_processor(sqlite.dialect(), None))


def _page_order(row: Sequence[Any]) -> tuple[int, str, int]:
    """A SQLite page row's place (the statement's ORDER BY: newest contact first, then its tags
    by when they were put on and by id; a contact without tags has one row, its tag NULL)."""
    return -row[0], row[14] or "", row[15] if row[15] is not None else -1


def list_contacts(connection: Connection, org: OrgContext, filters: ContactFilters, start: str | None) -> dict[str, Any]:
    """A page of the member list: ``{"results": [...], "next": token or None}``, each contact
    shaped as ``serialize`` shapes it, except that its times are aware datetimes in the
    organisation's zone (render the page with orjson: it writes them as ``render`` does)."""
    values: dict[str, Any] = {"organization_id": org.id, "now": utcnow()}
    if filters.member_id is not None:
        values["member_id"] = filters.member_id
    for name in ("line_uid", "customer_id", "status"):
        if getattr(filters, name):
            values[name] = getattr(filters, name)
    if filters.email:
        values["email"] = filters.email.strip()
    if filters.mobile:
        values["mobile"] = normalize_mobile_query(filters.mobile, org.region)
    scope = f"member:{org.id}"
    if start:
        values["below_id"] = position_after(scope, start)
    if filters.updated_at_min:
        values["window_from"] = start_of_day(filters.updated_at_min, org.tz, field="updated_at_min")
    if filters.updated_at_max:
        values["window_to"] = end_of_day(filters.updated_at_max, org.tz, field="updated_at_max")
    # all_tag=0: only tags put on within the updated_at window (when one is given); 1: all tags.
    if not filters.all_tag and "window_from" in values:
        values["tagged_from"] = values["window_from"]
    if not filters.all_tag and "window_to" in values:
        values["tagged_before"] = values["window_to"]
    statement = _member_page_statement(
        connection.dialect.name, tuple(name for name in _FILTER_COLUMNS if name in values), "below_id" in values,
        ("window_from" in values, "window_to" in values), ("tagged_from" in values, "tagged_before" in values))
    rows: Sequence[Sequence[Any]]
    if connection.dialect.name == "sqlite":
        loaded: list[list[Any]] = orjson.loads(connection.execute(statement, values).scalar_one())
        keys = [_page_order(row) for row in loaded]
        if any(keys[index - 1] > keys[index] for index in range(1, len(keys))):
            # SQLite's aggregate takes the rows in the subquery's order, but does not promise it
            loaded.sort(key=_page_order)
        rows = loaded
    else:
        rows = connection.execute(statement, values).fetchall()
    local = _local_times({time for row in rows for time in (row[10], row[11], row[12], row[14])}, org.tz)
    results: list[dict[str, Any]] = []
    last_id, more = None, False
    names: list[str] = []
    details: list[dict[str, Any]] = []
    for (contact_id, line_uid, line_display_name, display_name, email, mobile, customer_id, gender, birthday,
         status, updated_at, created_at, blocked_at, tag_name, tagged_at, _tag_id) in rows:
        if contact_id != last_id:
            if len(results) == PAGE_SIZE:
                more = True
                break
            last_id, names, details = contact_id, [], []
            results.append({
                "line_uid": line_uid, "line_display_name": line_display_name, "display_name": display_name,
                "email": email, "mobile": mobile, "customer_id": customer_id, "gender": gender,
                # SQLite: the stored "YYYY-MM-DD"; PostgreSQL: a date (orjson writes the same)
                "birthday": birthday, "tags": names, "tags_detail": details, "status": status,
                "updated_at": local[updated_at], "created_at": local[created_at], "blocked_at": local[blocked_at],
            })
        if tag_name is not None:
            names.append(tag_name)
            details.append({"name": tag_name, "tagged_at": local[tagged_at]})
    return {"results": results, "next": encode_token(scope, {"id": last_id}) if more else None}


def get_contact_by_line_uid(session: Session, org_id: int, line_uid: str) -> Contact | None:
    return session.scalar(select(Contact).where(Contact.organization_id == org_id, Contact.line_uid == line_uid))


def get_contact_view(session: Session, org: OrgContext, line_uid: str) -> dict[str, Any]:
    contact = get_contact_by_line_uid(session, org.id, line_uid)
    if contact is None:
        raise not_found()
    return serialize(contact, tags_for(session, [contact.id])[contact.id], org)


def clean_profile(org: OrgContext, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise profile fields; raise 400 with every field's error at once."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for field, value in changes.items():
        if field not in PROFILE_FIELDS:
            continue
        if value is None or (isinstance(value, str) and value.strip() == "" and field != "display_name"):
            cleaned[field] = None
            continue
        if not isinstance(value, str):
            errors[field] = ["Not a valid string."]
            continue
        if field == "email":
            if not is_email(value.strip()):
                errors[field] = [MSG_EMAIL]
            else:
                cleaned[field] = value.strip()
        elif field == "mobile":
            e164 = to_e164(value, org.region)
            if e164 is None:
                errors[field] = [MSG_PHONE]
            else:
                cleaned[field] = e164
        elif field == "gender":
            if value not in GENDERS:
                errors[field] = [choice_error(value)]
            else:
                cleaned[field] = value
        elif field == "birthday":
            parsed = parse_iso_date(value)
            if parsed is None:
                errors[field] = [MSG_DATE]
            else:
                cleaned[field] = parsed
        else:  # display_name, customer_id
            if len(value) > 255:
                errors[field] = ["Ensure this field has no more than 255 characters."]
            else:
                cleaned[field] = value
    if errors:
        raise field_errors(errors)
    return cleaned


def apply_profile(session: Session, contact: Contact, cleaned: dict[str, Any]) -> list[FieldChange]:
    """Write changed fields onto ``contact``; a customer_id moves from whoever held it before."""
    changes: list[FieldChange] = []
    for field, value in cleaned.items():
        old = getattr(contact, field)
        if old == value:
            continue
        if field == "customer_id" and value is not None:
            # The previous holder loses the id: that is a profile change of theirs too.
            for other_uid, other_old in session.execute(
                select(Contact.line_uid, Contact.customer_id).where(
                    Contact.organization_id == contact.organization_id,
                    Contact.customer_id == value,
                    Contact.id != contact.id,
                )
            ).all():
                emit_many(session, contact.organization_id, [profile_event(
                    line_uid=other_uid, customer_id=None, field="customer_id", old=other_old, new=None)])
            session.execute(
                update(Contact)
                .where(
                    Contact.organization_id == contact.organization_id,
                    Contact.customer_id == value,
                    Contact.id != contact.id,
                )
                .values(customer_id=None, updated_at=utcnow())
            )
        setattr(contact, field, value)
        changes.append(FieldChange(field, old, value))
    if changes:
        contact.updated_at = utcnow()
        # contact.profile.<field>.update, in the same transaction (PATCH member, imports).
        emit_many(session, contact.organization_id, [
            profile_event(line_uid=contact.line_uid, customer_id=contact.customer_id, field=change.field,
                          old=change.old, new=change.new)
            for change in changes
        ])
    return changes


def update_contact(session: Session, org: OrgContext, line_uid: str, changes: dict[str, Any]) -> dict[str, Any]:
    contact = session.scalar(
        select(Contact).where(Contact.organization_id == org.id, Contact.line_uid == line_uid).with_for_update()
    )
    if contact is None:
        raise not_found()
    cleaned = clean_profile(org, changes)
    apply_profile(session, contact, cleaned)
    session.flush()
    return serialize(contact, tags_for(session, [contact.id])[contact.id], org)


def record_follow(session: Session, organization_id: int, line_uid: str, at: datetime) -> tuple[Contact, bool]:
    """A follow (new friend or unblock). Returns the contact and whether it was created."""
    contact = session.scalar(
        select(Contact)
        .where(Contact.organization_id == organization_id, Contact.line_uid == line_uid)
        .with_for_update()
    )
    created = contact is None
    if contact is None:
        contact = Contact(organization_id=organization_id, line_uid=line_uid, created_at=at)
        session.add(contact)
    contact.status = "follow"
    contact.followed_at = at
    contact.blocked_at = None
    contact.updated_at = utcnow()
    session.flush()
    return contact, created


def record_unfollow(session: Session, organization_id: int, line_uid: str, at: datetime) -> Contact:
    contact = session.scalar(
        select(Contact)
        .where(Contact.organization_id == organization_id, Contact.line_uid == line_uid)
        .with_for_update()
    )
    if contact is None:
        # An unfollow from someone we never saw follow (e.g. before openmaac was connected).
        contact = Contact(organization_id=organization_id, line_uid=line_uid, created_at=at)
        session.add(contact)
    contact.status = "unfollow"
    contact.blocked_at = at
    contact.updated_at = utcnow()
    session.flush()
    return contact


def set_line_display_name(session: Session, organization_id: int, line_uid: str, name: str) -> bool:
    result = session.execute(
        update(Contact)
        .where(
            Contact.organization_id == organization_id,
            Contact.line_uid == line_uid,
            or_(Contact.line_display_name.is_(None), Contact.line_display_name != name),
        )
        .values(
            line_display_name=name,
            # MAAC shows the LINE name until someone sets a display name of their own.
            display_name=func.coalesce(Contact.display_name, name),
            updated_at=utcnow(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


__all__ = [
    "CONTACT_STATUSES",
    "ContactFilters",
    "FieldChange",
    "apply_profile",
    "clean_profile",
    "get_contact_by_line_uid",
    "get_contact_view",
    "list_contacts",
    "record_follow",
    "record_unfollow",
    "serialize",
    "set_line_display_name",
    "tags_for",
    "update_contact",
]
