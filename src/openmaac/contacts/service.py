"""Contacts: listing, profile updates, and the follow/unfollow lifecycle from LINE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.common.phones import to_e164
from openmaac.common.validation import MSG_DATE, MSG_EMAIL, MSG_PHONE, choice_error, is_email, parse_iso_date
from openmaac.contacts.models import CONTACT_STATUSES, GENDERS, Contact
from openmaac.db.base import utcnow
from openmaac.tags.models import ContactTag, Tag
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.pagination import PAGE_SIZE, Page, decode_token, encode_token
from openmaac.web.times import end_of_day, render, start_of_day
from openmaac.webhooks.events import emit_many, profile_event

PROFILE_FIELDS = ("display_name", "customer_id", "email", "mobile", "gender", "birthday")
MEMBER_VIEW_COLUMNS = tuple(Contact.__table__.c[name] for name in (
    "id", "line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id", "gender", "birthday",
    "status", "updated_at", "created_at", "blocked_at"))


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


def list_contacts(session: Session, org: OrgContext, filters: ContactFilters, start: str | None) -> dict[str, Any]:
    # Plain rows of the columns the member view shows, not ORM objects: a page is read-only
    # and 300 rows long (the CDH-only profile columns are not read).
    stmt = select(*MEMBER_VIEW_COLUMNS).where(Contact.organization_id == org.id)
    if filters.member_id is not None:
        stmt = stmt.where(Contact.id == filters.member_id)
    if filters.line_uid:
        stmt = stmt.where(Contact.line_uid == filters.line_uid)
    if filters.email:
        stmt = stmt.where(Contact.email == filters.email.strip())
    if filters.mobile:
        stmt = stmt.where(Contact.mobile == normalize_mobile_query(filters.mobile, org.region))
    if filters.customer_id:
        stmt = stmt.where(Contact.customer_id == filters.customer_id)
    if filters.status:
        stmt = stmt.where(Contact.status == filters.status)
    window_from = (start_of_day(filters.updated_at_min, org.tz, field="updated_at_min")
                   if filters.updated_at_min else None)
    window_to = end_of_day(filters.updated_at_max, org.tz, field="updated_at_max") if filters.updated_at_max else None
    if window_from is not None:
        stmt = stmt.where(Contact.updated_at >= window_from)
    if window_to is not None:
        stmt = stmt.where(Contact.updated_at < window_to)
    page = _page_of_rows(session, stmt, scope=f"member:{org.id}", start=start)
    # all_tag=0: only tags put on within the updated_at window (when one is given); 1: all tags.
    tag_window = {} if filters.all_tag else {"tagged_from": window_from, "tagged_before": window_to}
    tags = tags_for(session, [c.id for c in page.rows], **tag_window)
    render_time = page_renderer(org.tz)
    return {"results": [serialize(c, tags[c.id], org, render_time) for c in page.rows], "next": page.next}


def _page_of_rows(session: Session, stmt: Any, *, scope: str, start: str | None) -> Page:
    """``paginate_by_id`` for a select of columns (rows, not entities): same order, same tokens."""
    if start:
        last_id = decode_token(scope, start).get("id")
        if not isinstance(last_id, int):
            raise APIError(400, {"detail": "Invalid cursor"})
        stmt = stmt.where(Contact.id < last_id)
    rows = session.execute(stmt.order_by(Contact.id.desc()).limit(PAGE_SIZE + 1)).all()
    if len(rows) <= PAGE_SIZE:
        return Page(rows=list(rows), next=None)
    rows = rows[:PAGE_SIZE]
    return Page(rows=list(rows), next=encode_token(scope, {"id": rows[-1].id}))


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
